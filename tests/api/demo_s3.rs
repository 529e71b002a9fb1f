//! Demo mode's S3-compatible endpoint, spoken to by the product's real S3 client (aws-sdk-s3),
//! and the shipped flow of flows publishing to it on a fresh demo install.
use crate::helpers::spawn_demo_app;
use serde_json::{Value, json};
use std::time::Duration;
use trialflow::engine::RunOptions;
use trialflow::flows::runner::{Waiting, run_and_return};
use trialflow::objstore::demo_server::{DEMO_ACCESS_KEY_ID, DEMO_BUCKET, DEMO_SECRET_ACCESS_KEY};
use trialflow::objstore::{AwsConnection, ObjStoreError, S3Store};
use trialflow::secrets::SecretString;

fn store(base: &str, access_key_id: &str) -> S3Store {
    S3Store::new(&AwsConnection {
        access_key_id: access_key_id.into(),
        secret_access_key: SecretString::new(DEMO_SECRET_ACCESS_KEY.into()),
        region: String::new(),
        endpoint_url: Some(format!("{base}/s3")),
        path_style: true,
    })
    .expect("store")
}

#[tokio::test]
async fn the_real_client_round_trips_objects_through_the_demo_endpoint() {
    let app = spawn_demo_app().await;
    let s3 = store(&app.base, DEMO_ACCESS_KEY_ID);
    s3.check_bucket(DEMO_BUCKET)
        .await
        .expect("the demo bucket exists");
    assert!(matches!(
        s3.check_bucket("no-such-bucket").await,
        Err(ObjStoreError::NoSuchBucket { .. })
    ));

    s3.put_bytes(
        DEMO_BUCKET,
        "a/b/hello.json",
        b"{\"x\":1}".to_vec(),
        "application/json",
    )
    .await
    .expect("put");
    assert_eq!(
        s3.get_bytes(DEMO_BUCKET, "a/b/hello.json")
            .await
            .expect("get"),
        b"{\"x\":1}"
    );
    let on_disk = app
        .data_dir
        .join("demo-s3")
        .join(DEMO_BUCKET)
        .join("a/b/hello.json");
    assert_eq!(std::fs::read(&on_disk).expect("file on disk"), b"{\"x\":1}");
    assert!(matches!(
        s3.get_bytes(DEMO_BUCKET, "a/missing").await,
        Err(ObjStoreError::NoSuchKey { .. })
    ));

    // Past the threshold the client switches to multipart: three parts of 5 MiB, 5 MiB, 1 MiB.
    let big: Vec<u8> = (0..11 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("big.bin");
    std::fs::write(&path, &big).expect("write");
    let put = s3
        .clone()
        .with_multipart(6 * 1024 * 1024, 5 * 1024 * 1024)
        .put_file(DEMO_BUCKET, "big/big.bin", &path)
        .await
        .expect("multipart put");
    assert_eq!(put.bytes, big.len() as u64);
    assert!(
        put.etag.as_deref().is_some_and(|e| e.ends_with("-3")),
        "{put:?}"
    );
    assert!(s3.get_bytes(DEMO_BUCKET, "big/big.bin").await.expect("get") == big);
    let leftovers = std::fs::read_dir(app.data_dir.join("demo-s3/.uploads"))
        .expect("uploads dir")
        .count();
    assert_eq!(leftovers, 0, "a completed upload leaves no parts behind");

    let listed = s3
        .client()
        .list_objects_v2()
        .bucket(DEMO_BUCKET)
        .prefix("a/")
        .send()
        .await
        .expect("list");
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a/b/hello.json"]);
}

#[tokio::test]
async fn the_demo_endpoint_refuses_strangers_and_keys_that_leave_the_bucket() {
    let app = spawn_demo_app().await;
    let stranger = store(&app.base, "someone-else");
    let refused = stranger
        .put_bytes(DEMO_BUCKET, "x.txt", b"no".to_vec(), "text/plain")
        .await
        .expect_err("an unknown access key is refused");
    assert!(
        refused.to_string().contains("InvalidAccessKeyId"),
        "{refused}"
    );

    // Unsigned, straight over HTTP: refused before any path is looked at.
    let res = reqwest::Client::new()
        .put(format!("{}/s3/{DEMO_BUCKET}/x.txt", app.base))
        .body("no")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 403);

    let s3 = store(&app.base, DEMO_ACCESS_KEY_ID);
    let escape = s3
        .put_bytes(
            DEMO_BUCKET,
            "a/../../escape.txt",
            b"no".to_vec(),
            "text/plain",
        )
        .await;
    assert!(escape.is_err(), "a key with .. is refused: {escape:?}");
    assert!(!app.data_dir.join("demo-s3/escape.txt").exists());
    assert!(!app.data_dir.join("escape.txt").exists());
}

#[tokio::test]
async fn the_shipped_flow_of_flows_succeeds_on_a_fresh_demo_install() {
    let app = spawn_demo_app().await;
    let no_params = json!({}).as_object().cloned().unwrap_or_default();
    let results = run_and_return(
        &app.engine,
        "nightly_exports",
        no_params,
        "tester",
        RunOptions::default(),
        None,
        Waiting {
            timeout: Duration::from_secs(120),
            poll: Duration::from_millis(200),
        },
    )
    .await
    .expect("nightly_exports succeeds with nothing but demo mode");
    let publish = &results["publish-exports"]["results"]["publish"];
    assert_eq!(publish["bucket"], DEMO_BUCKET);
    let manifest_key = publish["manifest_key"].as_str().expect("manifest key");
    let bucket_dir = app.data_dir.join("demo-s3").join(DEMO_BUCKET);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bucket_dir.join(manifest_key)).expect("manifest"))
            .expect("json");
    let files = manifest["files"].as_array().expect("files");
    assert_eq!(files.len(), 3, "one file per demo study");
    for file in files {
        let key = file["key"].as_str().expect("key");
        let len = std::fs::metadata(bucket_dir.join(key))
            .expect("published file")
            .len();
        assert_eq!(Some(len), file["bytes"].as_u64(), "{key}");
    }
    assert!(
        manifest["total_rows"].as_i64().is_some_and(|n| n > 0),
        "{manifest}"
    );
}
