use super::*;
use crate::store::Db;

async fn setup(env: EnvFallback) -> (tempfile::TempDir, Db, Connections) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(None, dir.path()).await.unwrap();
    let keys = KeyRing::load_or_create_with(dir.path(), None).unwrap();
    let conns = Connections::new(db.clone(), keys, env);
    (dir, db, conns)
}

fn imednet_input(conn_id: &str, api_key: &str, security_key: &str) -> ConnectionInput {
    ConnectionInput {
        conn_id: conn_id.into(),
        kind: "imednet".into(),
        create: true,
        base_url: Some("http://127.0.0.1:9/sim".into()),
        api_key: Some(api_key.into()),
        security_key: Some(security_key.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn secrets_are_stored_encrypted_and_never_shown() {
    let (_dir, db, conns) = setup(EnvFallback::default()).await;
    let info = conns
        .save(
            &imednet_input("imednet_default", "api-AAAA-1111", "sec-BBBB-2222"),
            "alice",
        )
        .await
        .unwrap();
    assert_eq!(info.setting("base_url"), "http://127.0.0.1:9/sim");
    assert!(
        info.secrets
            .iter()
            .all(|s| s.configured && s.source == "connection")
    );

    let row = db.connection_row("imednet_default").await.unwrap().unwrap();
    let dump = format!("{row:?}");
    assert!(
        !dump.contains("api-AAAA-1111") && !dump.contains("sec-BBBB-2222"),
        "{dump}"
    );
    let secrets: BTreeMap<String, String> = serde_json::from_str(&row.secrets).unwrap();
    assert!(
        secrets.values().all(|v| v.starts_with("tf1:")),
        "{secrets:?}"
    );

    let described = conns.describe("imednet_default").await.unwrap();
    assert_eq!(
        described,
        json!({
            "conn_id": "imednet_default", "imednet_conn_id": "imednet_default", "kind": "imednet",
            "base_url": "http://127.0.0.1:9/sim",
            "api_key": "***", "security_key": "***",
            "api_key_configured": true, "security_key_configured": true,
            "api_key_source": "connection", "security_key_source": "connection",
        })
    );
    let settings = conns.imednet("imednet_default").await.unwrap();
    let cfg = settings.client_config().unwrap();
    assert_eq!(cfg.api_key.expose(), "api-AAAA-1111");
    assert_eq!(cfg.security_key.expose(), "sec-BBBB-2222");
    // Both are now known to the scrubber.
    let scrubbed = conns
        .known_secrets()
        .redact_text("key=api-AAAA-1111 sec=sec-BBBB-2222");
    assert_eq!(scrubbed, "key=*** sec=***");
}

#[tokio::test]
async fn blank_secret_keeps_the_stored_value_and_clear_erases_it() {
    let (_dir, _db, conns) = setup(EnvFallback::default()).await;
    conns
        .save(
            &imednet_input("c1", "api-first-value", "sec-first-value"),
            "alice",
        )
        .await
        .unwrap();
    let mut edit = imednet_input("c1", "", "sec-second-value");
    edit.create = false;
    edit.description = "edited".into();
    let info = conns.save(&edit, "bob").await.unwrap();
    assert_eq!(info.description, "edited");
    assert_eq!(info.updated_by, "bob");
    let cfg = conns.imednet("c1").await.unwrap().client_config().unwrap();
    assert_eq!(cfg.api_key.expose(), "api-first-value");
    assert_eq!(cfg.security_key.expose(), "sec-second-value");

    let mut clear = imednet_input("c1", "", "");
    clear.create = false;
    clear.clear = vec!["api_key".into()];
    let info = conns.save(&clear, "bob").await.unwrap();
    let api = info.secrets.iter().find(|s| s.field == "api_key").unwrap();
    assert!(!api.configured);
    let err = conns.imednet("c1").await.err().unwrap().to_string();
    assert!(
        err.contains("c1") && err.contains("API key") && err.contains("IMEDNET_API_KEY"),
        "{err}"
    );
}

#[tokio::test]
async fn environment_fills_blank_fields_like_the_provider() {
    let env = EnvFallback {
        api_key: Some("env-api-key-value".into()),
        security_key: Some("env-security-value".into()),
        base_url: Some("http://env.example/api/".into()),
    };
    let (_dir, _db, conns) = setup(env).await;
    // The default id works from the environment alone.
    let s = conns.imednet("imednet_default").await.unwrap();
    assert_eq!(s.base_url, "http://env.example/api/");
    assert_eq!(
        s.client_config().unwrap().api_key.expose(),
        "env-api-key-value"
    );
    // Another id must exist.
    assert!(matches!(
        conns.imednet("other").await,
        Err(ConnectionError::NotFound(_))
    ));

    let mut input = imednet_input("partial", "conn-api-key", "");
    input.base_url = Some(String::new());
    let info = conns.save(&input, "alice").await.unwrap();
    let sec = info
        .secrets
        .iter()
        .find(|s| s.field == "security_key")
        .unwrap();
    assert_eq!((sec.configured, sec.source.as_str()), (true, "env"));
    let s = conns.imednet("partial").await.unwrap();
    let cfg = s.client_config().unwrap();
    assert_eq!(cfg.api_key.expose(), "conn-api-key");
    assert_eq!(cfg.security_key.expose(), "env-security-value");
    assert_eq!(s.base_url, "http://env.example/api/");
    // Env values are scrubbed too.
    assert_eq!(
        conns.known_secrets().redact_text("env-api-key-value"),
        "***"
    );
}

#[tokio::test]
async fn bad_input_is_named() {
    let (_dir, _db, conns) = setup(EnvFallback::default()).await;
    let err = |input: ConnectionInput| {
        let conns = &conns;
        async move { conns.save(&input, "a").await.err().unwrap().to_string() }
    };
    let mut bad_id = imednet_input("has space", "k1234", "s1234");
    bad_id.conn_id = "has space".into();
    assert!(err(bad_id).await.starts_with("conn_id:"));
    let mut bad_kind = imednet_input("k", "k1234", "s1234");
    bad_kind.kind = "ftp".into();
    assert!(
        err(bad_kind)
            .await
            .contains("unknown connection kind 'ftp'")
    );
    let mut bad_url = imednet_input("u", "k1234", "s1234");
    bad_url.base_url = Some("ftp://x".into());
    assert!(err(bad_url).await.starts_with("base_url:"));
    let mut bad_extra = imednet_input("e", "k1234", "s1234");
    bad_extra.extra = Some(r#"{"timeout_seconds": 5, "colour": "red"}"#.into());
    let e = err(bad_extra).await;
    assert!(
        e.contains("unknown option `colour`") && e.contains("timeout_seconds"),
        "{e}"
    );
    let mut bad_value = imednet_input("v", "k1234", "s1234");
    bad_value.extra = Some(r#"{"page_size": 900}"#.into());
    assert!(err(bad_value).await.starts_with("extra.page_size:"));
    let mut not_json = imednet_input("j", "k1234", "s1234");
    not_json.extra = Some("{nope".into());
    assert!(err(not_json).await.contains("extra: is not valid JSON"));
    let mut pw = imednet_input("p", "k1234", "s1234");
    pw.extra = Some(r#"{"password": "hunter22"}"#.into());
    let e = err(pw).await;
    assert!(
        e.starts_with("extra.password:") && !e.contains("hunter22"),
        "{e}"
    );
    let mut newline = imednet_input("n", "k1234\nx", "s1234");
    newline.api_key = Some("abc\ndef".into());
    assert!(err(newline).await.starts_with("api_key:"));

    conns
        .save(&imednet_input("dup", "k1234", "s1234"), "a")
        .await
        .unwrap();
    assert!(
        err(imednet_input("dup", "k1234", "s1234"))
            .await
            .contains("already exists")
    );
    let mut kind_change = imednet_input("dup", "", "");
    kind_change.create = false;
    kind_change.kind = "aws".into();
    assert!(err(kind_change).await.starts_with("kind:"));
    let mut missing = imednet_input("ghost", "", "");
    missing.create = false;
    assert!(err(missing).await.contains("`ghost` does not exist"));
    let aws = conns.aws("dup").await.err().unwrap().to_string();
    assert!(aws.contains("is a imednet connection, not aws"), "{aws}");
}

#[tokio::test]
async fn keys_in_extra_fill_the_secret_fields() {
    let (_dir, db, conns) = setup(EnvFallback::default()).await;
    let mut input = imednet_input("x", "", "");
    input.extra = Some(
        r#"{"api_key": "extra-api-key", "security_key": "extra-sec-key", "max_retries": 1}"#.into(),
    );
    let info = conns.save(&input, "a").await.unwrap();
    assert!(info.secrets.iter().all(|s| s.source == "connection"));
    let row = db.connection_row("x").await.unwrap().unwrap();
    assert!(!row.settings.contains("extra-api-key"), "{}", row.settings);
    assert!(row.settings.contains("max_retries"));
    let cfg = conns.imednet("x").await.unwrap().client_config().unwrap();
    assert_eq!(cfg.api_key.expose(), "extra-api-key");
    assert_eq!(cfg.max_retries, 1);
}

#[tokio::test]
async fn aws_connection_round_trip() {
    let (_dir, _db, conns) = setup(EnvFallback::default()).await;
    let input = ConnectionInput {
        conn_id: "aws_default".into(),
        kind: "aws".into(),
        create: true,
        access_key_id: Some("AKIAEXAMPLE123".into()),
        secret_access_key: Some("very-secret-access-key".into()),
        region: Some("eu-west-1".into()),
        endpoint_url: Some("http://127.0.0.1:5000".into()),
        path_style: Some("on".into()),
        bucket: Some("exports".into()),
        ..Default::default()
    };
    conns.save(&input, "a").await.unwrap();
    let s = conns.aws("aws_default").await.unwrap();
    assert_eq!(s.connection.access_key_id, "AKIAEXAMPLE123");
    assert_eq!(
        s.connection.secret_access_key.expose_secret(),
        "very-secret-access-key"
    );
    assert!(s.connection.path_style);
    assert_eq!(s.bucket.as_deref(), Some("exports"));
    let d = conns.describe("aws_default").await.unwrap();
    assert_eq!(d["secret_access_key"], "***");
    assert_eq!(d["access_key_id"], "***");
    assert_eq!(d["secret_access_key_configured"], true);
    assert_eq!(d["endpoint_url"], "http://127.0.0.1:5000");
    let text = d.to_string();
    assert!(
        !text.contains("AKIAEXAMPLE123") && !text.contains("very-secret"),
        "{text}"
    );
}

#[tokio::test]
async fn rotation_re_encrypts_every_value_and_old_values_stay_readable() {
    let (dir, db, conns) = setup(EnvFallback::default()).await;
    conns
        .save(&imednet_input("a", "api-a-value", "sec-a-value"), "x")
        .await
        .unwrap();
    conns
        .save(&imednet_input("b", "api-b-value", "sec-b-value"), "x")
        .await
        .unwrap();
    let before = db.connection_row("a").await.unwrap().unwrap().secrets;
    let (new_id, count) = conns.rotate_key().await.unwrap();
    assert_eq!(count, 4);
    let after = db.connection_row("a").await.unwrap().unwrap().secrets;
    assert_ne!(before, after);
    assert!(after.contains(&format!("tf1:{new_id}:")), "{after}");
    // A fresh process (new key ring from the file) reads the re-encrypted values.
    let keys = KeyRing::load_or_create_with(dir.path(), None).unwrap();
    assert_eq!(keys.active_key_id(), new_id);
    let fresh = Connections::new(db.clone(), keys, EnvFallback::default());
    let cfg = fresh.imednet("b").await.unwrap().client_config().unwrap();
    assert_eq!(cfg.api_key.expose(), "api-b-value");
    // Nothing left to do.
    assert_eq!(fresh.reencrypt_all().await.unwrap(), 0);
}

#[test]
fn known_secrets_scrub_json_keys_and_values_at_any_depth() {
    let known = KnownSecrets::default();
    known.add(&SecretString::from("leaky-value-123"));
    let v = json!({
        "study": {"api_key": 42, "nested": [{"token": {"a": 1}}, "say leaky-value-123"]},
        "leaky-value-123": true, "n": 1.5, "b": false, "z": null
    });
    let out = known.redact_json(&v);
    assert_eq!(
        out,
        json!({
            "study": {"api_key": "***", "nested": [{"token": "***"}, "say ***"]},
            "***": true, "n": 1.5, "b": false, "z": null
        })
    );
}
