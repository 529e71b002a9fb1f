//! Path traversal, gathered in one place: export folders given at trigger time, downloads of
//! artifact rows that point elsewhere, and object keys on the way to S3. (The demo S3
//! endpoint's own key checks are in `demo_s3.rs`, flow filesystems' in `flows.rs`.)
use crate::exports::{demo_app_with, failure, run_to_end};
use crate::helpers::Backend;
use app::model::Role;
use app::state::RunState;
use serde_json::json;
use trialflow::objstore::demo_server::DEMO_BUCKET;
use trialflow::store::connections::NewArtifact;

const PUBLISH: &str = r#"
id: publish_prefix
params:
  prefix: { type: string, default: ok }
tasks:
  publish:
    operator: s3.publish
    args:
      files: []
      prefix: "{{ params.prefix }}"
"#;

#[tokio::test]
async fn nothing_is_written_or_served_outside_the_export_root_or_a_bucket_prefix() {
    let app = demo_app_with(Backend::Sqlite, &[("publish_prefix.yaml", PUBLISH)]).await;
    let server_dir = std::path::absolute(&app.data_dir).unwrap();
    let server_dir = server_dir.to_str().unwrap().to_string();

    // Export folders given when triggering: refused by every study's task, with the rule
    // named and the server's own folders not.
    for (export_root, reason) in [
        ("../outside", "must not contain `..`"),
        ("a/../../outside", "must not contain `..`"),
        ("/etc", "is outside the export root"),
        (
            &format!("s3://{DEMO_BUCKET}/../outside") as &str,
            "must not contain . or .. segments",
        ),
        (
            &format!("s3://{DEMO_BUCKET}/a/./b") as &str,
            "must not contain . or .. segments",
        ),
    ] {
        let (run, state) = run_to_end(
            &app,
            "imednet_multi_study_reference",
            json!({"export_root": export_root}),
        )
        .await;
        assert_eq!(state, RunState::Failed, "export_root {export_root}");
        let errors = failure(&app, run).await;
        assert!(errors.contains(reason), "{export_root}: {errors}");
        assert!(!errors.contains(&server_dir), "{export_root}: {errors}");
        assert!(
            app.db.run_artifacts(run).await.unwrap().is_empty(),
            "{export_root}: a file was recorded"
        );
    }
    assert!(!app.data_dir.join("outside").exists());
    assert!(!app.data_dir.join("exports/../outside").exists());

    // Object keys on the way to S3: a bad prefix fails before anything is uploaded.
    let bucket_dir = app.data_dir.join("demo-s3").join(DEMO_BUCKET);
    let before = std::fs::read_dir(&bucket_dir).unwrap().count();
    for prefix in ["../up", "a/../..", "./x", "x/\u{7}"] {
        let (run, state) = run_to_end(&app, "publish_prefix", json!({"prefix": prefix})).await;
        assert_eq!(state, RunState::Failed, "prefix {prefix}");
        let errors = failure(&app, run).await;
        assert!(errors.contains("prefix `"), "{prefix}: {errors}");
    }
    assert_eq!(std::fs::read_dir(&bucket_dir).unwrap().count(), before);
    let (_, state) = run_to_end(&app, "publish_prefix", json!({"prefix": "fine/x"})).await;
    assert_eq!(state, RunState::Success, "a plain prefix publishes");
    assert!(bucket_dir.join("fine/x/manifest.json").exists());

    // Downloads: a row pointing outside the export root, one climbing out of it, and a symlink
    // inside it to a file outside are all "no longer there" (404), never the file.
    let (run, state) = run_to_end(&app, "imednet_multi_study_reference", json!({})).await;
    assert_eq!(state, RunState::Success);
    let real = app.db.run_artifacts(run).await.unwrap().remove(0);
    let outside = app.data_dir.join("outside-secret.txt");
    std::fs::write(&outside, "not for download").unwrap();
    let export_dir = std::path::Path::new(&real.uri)
        .parent()
        .unwrap()
        .to_path_buf();
    let link = export_dir.join("link.csv");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let climbing = format!("{}/../../../outside-secret.txt", export_dir.display());
    let viewer = app.client_as(Role::Viewer).await;
    for uri in [
        outside.to_str().unwrap(),
        climbing.as_str(),
        link.to_str().unwrap(),
        "/etc/hostname",
    ] {
        let id = app
            .db
            .insert_artifact(&NewArtifact {
                run_id: run,
                task_instance_id: real.task_instance_id,
                uri,
                bytes: 16,
                sha256: "0",
                rows_written: None,
            })
            .await
            .unwrap();
        let res = viewer
            .get(app.url(&format!("/artifacts/{id}/download")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{uri}");
        let body = res.text().await.unwrap();
        assert_eq!(body, "The file is no longer there.", "{uri}");
    }
    // The real file still downloads.
    let res = viewer
        .get(app.url(&format!("/artifacts/{}/download", real.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
