//! The audit log is a hash chain: edits, removals and truncation made behind the application's
//! back are found and named, on both backends; exports carry the chain; only admins get them.
use crate::helpers::{BACKENDS, Backend, client, fresh_db, spawn_app_on};
use app::model::Role;
use serde_json::{Value, json};
use trialflow::store::Db;
use trialflow::store::audit::entry_hash;

/// Runs SQL as someone with database access would, bypassing the application.
async fn raw(db: &Db, sql: &str) -> Result<u64, sqlx::Error> {
    match db {
        Db::Sqlite(pool) => sqlx::query(sql)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        Db::Postgres(pool) => sqlx::query(sql)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    }
}

/// Lifts the append-only triggers, as a tamperer with database rights could.
async fn drop_guards(db: &Db, backend: Backend) {
    let sql = match backend {
        Backend::Sqlite => {
            "DROP TRIGGER audit_log_never_updated; DROP TRIGGER audit_log_never_deleted"
        }
        Backend::Postgres => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
    };
    for statement in sql.split(';') {
        raw(db, statement).await.expect("drop guard");
    }
}

async fn seeded(backend: Backend) -> (Db, tempfile::TempDir) {
    let (db, dir) = fresh_db(backend).await;
    for i in 1..=6 {
        db.audit("ann", "run.trigger", &format!("p run {i}"), json!({"i": i}))
            .await
            .unwrap();
    }
    (db, dir)
}

#[tokio::test]
async fn a_fresh_chain_verifies_and_links_every_entry() {
    for backend in BACKENDS {
        let (db, _dir) = seeded(backend).await;
        let report = db.verify_audit().await.unwrap();
        assert!(report.ok(), "{backend:?}: {report:?}");
        assert_eq!((report.entries, report.unchained), (6, 0));
        let entries = db.audit_after(0, 100).await.unwrap();
        assert_eq!(entries[0].prev_hash, "");
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash, "{backend:?}");
        }
        let last = entries.last().unwrap();
        assert_eq!(report.head, last.hash);
        assert_eq!(
            last.hash,
            entry_hash(
                last.at,
                &last.actor,
                &last.action,
                &last.target,
                &last.detail,
                &last.prev_hash
            )
        );
    }
}

#[tokio::test]
async fn the_database_refuses_to_change_or_delete_entries() {
    for backend in BACKENDS {
        let (db, _dir) = seeded(backend).await;
        let update = raw(&db, "UPDATE audit_log SET actor = 'mallory' WHERE id = 2").await;
        assert!(
            update.unwrap_err().to_string().contains("never changed"),
            "{backend:?}"
        );
        let delete = raw(&db, "DELETE FROM audit_log WHERE id = 2").await;
        assert!(
            delete.unwrap_err().to_string().contains("never"),
            "{backend:?}"
        );
        assert!(db.verify_audit().await.unwrap().ok());
    }
}

#[tokio::test]
async fn an_edited_entry_is_named_by_verify() {
    for backend in BACKENDS {
        let (db, _dir) = seeded(backend).await;
        drop_guards(&db, backend).await;
        raw(&db, "UPDATE audit_log SET actor = 'mallory' WHERE id = 3")
            .await
            .unwrap();
        let broken = db.verify_audit().await.unwrap().broken.expect("broken");
        assert_eq!(broken.id, 3, "{backend:?}");
        assert!(broken.reason.contains("edited"), "{}", broken.reason);
    }
}

#[tokio::test]
async fn a_recomputed_hash_still_breaks_the_next_link() {
    for backend in BACKENDS {
        let (db, _dir) = seeded(backend).await;
        drop_guards(&db, backend).await;
        // The tamperer edits entry 3 and fixes its hash; entry 4 still links to the old one.
        let e = db.audit_after(2, 1).await.unwrap().remove(0);
        let forged = entry_hash(
            e.at,
            "mallory",
            &e.action,
            &e.target,
            &e.detail,
            &e.prev_hash,
        );
        raw(
            &db,
            &format!("UPDATE audit_log SET actor = 'mallory', hash = '{forged}' WHERE id = 3"),
        )
        .await
        .unwrap();
        let broken = db.verify_audit().await.unwrap().broken.expect("broken");
        assert_eq!(broken.id, 4, "{backend:?}");
        assert!(broken.reason.contains("link"), "{}", broken.reason);
    }
}

#[tokio::test]
async fn removed_entries_are_found_in_the_middle_and_at_the_end() {
    for backend in BACKENDS {
        let (db, _dir) = seeded(backend).await;
        drop_guards(&db, backend).await;
        raw(&db, "DELETE FROM audit_log WHERE id = 2")
            .await
            .unwrap();
        let broken = db.verify_audit().await.unwrap().broken.expect("broken");
        assert_eq!(broken.id, 3, "{backend:?}: the entry after the gap");

        let (db, _dir) = seeded(backend).await;
        drop_guards(&db, backend).await;
        raw(&db, "DELETE FROM audit_log WHERE id >= 5")
            .await
            .unwrap();
        let broken = db.verify_audit().await.unwrap().broken.expect("broken");
        assert_eq!(broken.id, 0, "{backend:?}: the head names the lost end");
        assert!(
            broken.reason.contains("newest entries were removed"),
            "{}",
            broken.reason
        );
    }
}

#[tokio::test]
async fn concurrent_writers_keep_one_unbroken_chain() {
    for backend in BACKENDS {
        let (db, _dir) = fresh_db(backend).await;
        let writers = (0..40).map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.audit(
                    &format!("user{}", i % 4),
                    "run.cancel",
                    &format!("run {i}"),
                    json!({}),
                )
                .await
                .unwrap();
            })
        });
        for w in futures::future::join_all(writers).await {
            w.unwrap();
        }
        let report = db.verify_audit().await.unwrap();
        assert!(report.ok(), "{backend:?}: {report:?}");
        assert_eq!(report.entries, 40);
    }
}

#[tokio::test]
async fn admins_export_the_chain_as_csv_and_json_and_the_page_shows_its_state() {
    for backend in BACKENDS {
        let app = spawn_app_on(backend).await;
        let admin = app.client_as(Role::Admin).await;
        let viewer = app.client_as(Role::Viewer).await;
        // Sign-ins are audited: two so far.
        let json_export = admin
            .get(app.url("/audit/export.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(json_export.status(), 200, "{backend:?}");
        assert!(
            json_export.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .ends_with(".json\"")
        );
        let body: Value = json_export.json().await.unwrap();
        assert_eq!(body["chain"]["broken"], Value::Null, "{body}");
        let entries = body["entries"].as_array().unwrap();
        assert!(entries.iter().any(|e| e["action"] == "session.login"));
        // The export re-verifies on its own: each hash from its fields and the link before it.
        let mut prev = String::new();
        for e in entries.iter().filter(|e| e["hash"] != "") {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            assert_eq!(s("prev_hash"), prev);
            let at = e["at"].as_i64().unwrap();
            let hash = entry_hash(
                at,
                &s("actor"),
                &s("action"),
                &s("target"),
                &s("detail"),
                &prev,
            );
            assert_eq!(s("hash"), hash);
            prev = hash;
        }
        assert_eq!(body["chain"]["head"], Value::String(prev));

        let csv_export = admin
            .get(app.url("/audit/export.csv"))
            .send()
            .await
            .unwrap();
        assert_eq!(csv_export.status(), 200);
        assert_eq!(csv_export.headers()["content-type"], "text/csv");
        let text = csv_export.text().await.unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        assert_eq!(&headers[0], "id");
        assert_eq!(&headers[9], "hash");
        assert_eq!(reader.records().count(), entries.len());

        assert_eq!(
            viewer
                .get(app.url("/audit/export.csv"))
                .send()
                .await
                .unwrap()
                .status(),
            403
        );
        assert_eq!(
            client()
                .get(app.url("/audit/export.json"))
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
        assert_eq!(
            admin
                .get(app.url("/audit/export.xml"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );

        let page = app.page_text(&admin, "/audit").await;
        assert!(page.contains("data-ok=\"true\""), "{backend:?}");
        assert!(page.contains("Hash chain intact"));

        drop_guards(&app.db, backend).await;
        let first = entries[0]["id"].as_i64().unwrap();
        raw(
            &app.db,
            &format!("UPDATE audit_log SET target = 'x' WHERE id = {first}"),
        )
        .await
        .unwrap();
        let page = app.page_text(&admin, "/audit").await;
        assert!(page.contains("data-ok=\"false\""), "{backend:?}");
        assert!(page.contains(&format!("at entry #{first}")), "{page}");
    }
}

#[tokio::test]
async fn the_cli_verifies_and_exits_non_zero_naming_the_entry() {
    let (db, dir) = seeded(Backend::Sqlite).await;
    let verify = || {
        std::process::Command::new(crate::crash::binary())
            .args(["audit", "verify"])
            .env("TRIALFLOW_DATA_DIR", dir.path())
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("intact: 6 entries"));
    drop_guards(&db, Backend::Sqlite).await;
    raw(
        &db,
        "UPDATE audit_log SET detail = '{\"i\": 40}' WHERE id = 4",
    )
    .await
    .unwrap();
    let bad = verify();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("broken at entry 4"), "{stderr}");
}
