//! One conformance suite for both storage backends.
use crate::helpers::{BACKENDS, Backend, fresh_db};
use app::model::Role;
use tower_sessions::SessionStore;
use tower_sessions::session::{Id, Record};
use trialflow::store::Db;
use trialflow::store::sessions::DbSessionStore;
use trialflow::store::throttle::ThrottlePolicy;

async fn each_backend<F, Fut>(check: F)
where
    F: Fn(Db, Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in BACKENDS {
        let (db, _dir) = fresh_db(backend).await;
        check(db, backend).await;
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    each_backend(|db, backend| async move {
        db.migrate()
            .await
            .unwrap_or_else(|e| panic!("{backend:?}: second migration run: {e}"));
        assert_eq!(db.user_count().await.expect("count"), 0);
    })
    .await;
}

#[tokio::test]
async fn users_round_trip_and_names_are_unique() {
    each_backend(|db, backend| async move {
        let u = db
            .insert_user("ann", "hash-1", Role::Op)
            .await
            .expect("insert");
        assert_eq!(
            (u.username.as_str(), u.role(), u.disabled, u.session_epoch),
            ("ann", Role::Op, false, 0)
        );
        let dup = db
            .insert_user("ann", "hash-2", Role::Viewer)
            .await
            .expect_err("duplicate");
        assert!(dup.is_unique_violation(), "{backend:?}: {dup}");

        let changed = db
            .set_user_role(u.id, Role::Admin)
            .await
            .expect("role")
            .expect("row");
        assert_eq!((changed.role(), changed.session_epoch), (Role::Admin, 1));
        let disabled = db
            .set_user_disabled(u.id, true)
            .await
            .expect("disable")
            .expect("row");
        assert!(disabled.disabled);
        assert_eq!(db.other_active_admins(0).await.expect("count"), 0);
        let rehashed = db
            .set_password_hash(u.id, "hash-3")
            .await
            .expect("hash")
            .expect("row");
        assert_eq!(
            (rehashed.password_hash.as_str(), rehashed.session_epoch),
            ("hash-3", 3)
        );
        assert!(
            db.set_user_role(9999, Role::User)
                .await
                .expect("missing")
                .is_none()
        );
        assert_eq!(
            db.user_by_name("ann").await.expect("by name").map(|r| r.id),
            Some(u.id)
        );
        assert_eq!(db.list_users().await.expect("list").len(), 1);
    })
    .await;
}

#[tokio::test]
async fn throttle_counts_failures_and_clears() {
    each_backend(|db, backend| async move {
        let policy = ThrottlePolicy {
            free_failures: 2,
            window_ms: 60_000,
            base_lock_ms: 1_000,
            max_lock_ms: 4_000,
        };
        assert_eq!(
            db.throttle_record_failure("user:x", policy)
                .await
                .expect("1"),
            0
        );
        assert_eq!(
            db.throttle_record_failure("user:x", policy)
                .await
                .expect("2"),
            1_000
        );
        assert_eq!(
            db.throttle_record_failure("user:x", policy)
                .await
                .expect("3"),
            2_000
        );
        let wait = db.throttle_wait_ms("user:x").await.expect("wait");
        assert!(wait > 1_000 && wait <= 2_000, "{backend:?}: {wait}");
        assert_eq!(db.throttle_wait_ms("user:y").await.expect("other key"), 0);
        db.throttle_clear("user:x").await.expect("clear");
        assert_eq!(db.throttle_wait_ms("user:x").await.expect("cleared"), 0);
    })
    .await;
}

#[tokio::test]
async fn audit_entries_come_back_newest_first() {
    each_backend(|db, _| async move {
        db.audit(
            "ann",
            "user.create",
            "bob",
            serde_json::json!({"role": "op"}),
        )
        .await
        .expect("audit");
        db.audit("ann", "user.disable", "bob", serde_json::json!({}))
            .await
            .expect("audit");
        let entries = db.audit_entries(10).await.expect("entries");
        let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["user.disable", "user.create"]);
        assert_eq!(entries[1].detail, r#"{"role":"op"}"#);
    })
    .await;
}

/// A signed-in user's session record ending `expires_in` from now (negative: already ended).
fn session_of(user_id: i64, expires_in: time::Duration) -> Record {
    Record {
        id: Id::default(),
        data: [(
            "user".to_string(),
            serde_json::json!({"id": user_id, "epoch": 0}),
        )]
        .into_iter()
        .collect(),
        expiry_date: time::OffsetDateTime::now_utc() + expires_in,
    }
}

#[tokio::test]
async fn sessions_are_stored_loaded_and_deleted() {
    each_backend(|db, backend| async move {
        let idle = time::Duration::hours(1);
        let store = DbSessionStore::new(db.clone(), idle);
        let mut record = session_of(1, time::Duration::hours(1));
        store.create(&mut record).await.expect("create");
        let loaded = store
            .load(&record.id)
            .await
            .expect("load")
            .expect("present");
        assert_eq!(loaded.data, record.data, "{backend:?}");
        store.delete(&record.id).await.expect("delete");
        assert!(store.load(&record.id).await.expect("load").is_none());

        let mut expired = session_of(3, -time::Duration::minutes(1));
        store.create(&mut expired).await.expect("create expired");
        assert!(
            store.load(&expired.id).await.expect("load").is_none(),
            "{backend:?}: expired sessions are not loaded"
        );
        store.delete_expired().await.expect("sweep");

        // Signed in 50 minutes ago and active since: loading extends the stored expiry (not
        // the sign-in time plus idle), so the session lives on.
        let mut active = session_of(2, time::Duration::minutes(10));
        store.create(&mut active).await.expect("create active");
        let first = store
            .load(&active.id)
            .await
            .expect("load")
            .expect("present");
        let least = time::OffsetDateTime::now_utc() + idle - time::Duration::seconds(5);
        assert!(first.expiry_date > least, "{backend:?}: {first:?}");
        assert_eq!(
            first.data, active.data,
            "{backend:?}: the data is not touched"
        );
        // Within the minute the stored expiry is not written again.
        let again = store
            .load(&active.id)
            .await
            .expect("load")
            .expect("present");
        assert_eq!(again.expiry_date, first.expiry_date, "{backend:?}");
        // Read back by a store with a short idle time, which has nothing to extend: the
        // database holds the new expiry.
        let reader = DbSessionStore::new(db, time::Duration::minutes(1));
        let stored = reader
            .load(&active.id)
            .await
            .expect("load")
            .expect("present");
        assert!(stored.expiry_date > least, "{backend:?}: stored {stored:?}");
        // Signed out in between: a later load does not bring the session back.
        store.delete(&active.id).await.expect("sign out");
        assert!(store.load(&active.id).await.expect("load").is_none());
    })
    .await;
}

#[tokio::test]
async fn two_processes_opening_a_new_sqlite_file_at_once_both_succeed() {
    // Each open takes the migration lock through its own file handle, as two processes would.
    for _ in 0..20 {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = tokio::join!(Db::connect(None, dir.path()), Db::connect(None, dir.path()));
        a.expect("first opener");
        b.expect("second opener");
    }
}
