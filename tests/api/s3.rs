//! The object store against a real S3-compatible server over plain HTTP: moto's standalone
//! server, started per test as a child process and killed by a guard on drop (also on panic).
//!
//! moto_server comes from `MOTO_SERVER` or the repository's `.venv/bin/moto_server`, which
//! `scripts/test.sh` installs.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trialflow::objstore::{AwsConnection, ObjStoreError, PutResult, S3Store, parse_s3_url};
use trialflow::secrets::SecretString;

const SECRET: &str = "moto-secret-access-key-never-printed";

/// A running moto_server; killed and reaped on drop.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with_env(&[])
    }

    fn start_with_env(env: &[(&str, &str)]) -> Moto {
        let bin = std::env::var_os("MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server")
            });
        assert!(
            bin.exists(),
            "moto_server not found at {} — run scripts/test.sh (it creates .venv with moto) \
             or set MOTO_SERVER",
            bin.display()
        );
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn moto_server");
        let moto = Moto { child, port };
        moto.wait_ready();
        moto
    }

    fn wait_ready(&self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// In demo mode (where `aws_default` exists, pointing at the demo endpoint): an edit of it
    /// that points it at this server instead.
    pub fn replacing_demo_connection(&self, bucket: Option<&str>) -> app::model::ConnectionInput {
        app::model::ConnectionInput {
            create: false,
            ..self.connection(bucket)
        }
    }

    /// An `aws_default` connection to this server, with `bucket` as its default when given.
    pub fn connection(&self, bucket: Option<&str>) -> app::model::ConnectionInput {
        app::model::ConnectionInput {
            conn_id: "aws_default".into(),
            kind: "aws".into(),
            create: true,
            access_key_id: Some("AKIDMOTOTEST".into()),
            secret_access_key: Some("moto-test-secret-access-key".into()),
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.endpoint()),
            path_style: Some("true".into()),
            bucket: bucket.map(str::to_string),
            ..Default::default()
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn store(&self) -> S3Store {
        S3Store::new(&connection(Some(self.endpoint()), "AKIDMOTOTEST")).expect("store")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lets the OS pick a port; the tiny race until moto binds it is acceptable in tests.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

fn connection(endpoint: Option<String>, access_key_id: &str) -> AwsConnection {
    AwsConnection {
        access_key_id: access_key_id.into(),
        secret_access_key: SecretString::from(SECRET),
        region: "eu-west-1".into(),
        endpoint_url: endpoint,
        path_style: true,
    }
}

fn assert_no_secret(err: &ObjStoreError) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains(SECRET), "secret leaked: {text}");
}

#[tokio::test]
async fn bytes_and_files_round_trip() {
    let moto = Moto::start();
    let s3 = moto.store();
    s3.create_bucket("exports").await.expect("create bucket");
    s3.check_bucket("exports").await.expect("bucket exists");

    let put = s3
        .put_bytes(
            "exports",
            "json/records.json",
            br#"[{"a":1}]"#.to_vec(),
            "application/json",
        )
        .await
        .expect("put bytes");
    assert_eq!(put.bytes, 9);
    assert!(
        put.etag.as_deref().is_some_and(|e| !e.contains('"')),
        "{put:?}"
    );
    assert_eq!(
        s3.get_bytes("exports", "json/records.json")
            .await
            .expect("get"),
        br#"[{"a":1}]"#
    );

    let mut file = tempfile::Builder::new()
        .suffix(".csv")
        .tempfile()
        .expect("tmp");
    let csv: Vec<u8> = (0..50_000)
        .flat_map(|i| format!("{i},subject-{i},ok\n").into_bytes())
        .collect();
    file.write_all(&csv).expect("write");
    file.flush().expect("flush");
    let (bucket, key) = parse_s3_url("s3://exports/study A/export.csv").expect("url");
    let put = s3
        .put_file(&bucket, &key, file.path())
        .await
        .expect("put file");
    assert_eq!(put.bytes, csv.len() as u64);
    assert_eq!(s3.get_bytes(&bucket, &key).await.expect("get file"), csv);
    let head = s3
        .client()
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_type(), Some("text/csv"));

    // Empty files are valid exports too.
    let empty = tempfile::NamedTempFile::new().expect("tmp");
    let put = s3
        .put_file("exports", "empty", empty.path())
        .await
        .expect("put empty");
    assert_eq!(
        put,
        PutResult {
            bytes: 0,
            etag: put.etag.clone()
        }
    );
    assert!(
        s3.get_bytes("exports", "empty")
            .await
            .expect("get")
            .is_empty()
    );
}

#[tokio::test]
async fn large_file_uses_multipart() {
    let moto = Moto::start();
    // Parts of 5 MiB (S3's minimum), switch above 6 MiB: an 11 MiB file makes 3 parts.
    let s3 = moto
        .store()
        .with_multipart(6 * 1024 * 1024, 5 * 1024 * 1024);
    s3.create_bucket("big").await.expect("create bucket");
    let mut file = tempfile::NamedTempFile::new().expect("tmp");
    let data: Vec<u8> = (0..11 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    file.write_all(&data).expect("write");
    file.flush().expect("flush");
    let put = s3
        .put_file("big", "dump.bin", file.path())
        .await
        .expect("multipart");
    assert_eq!(put.bytes, data.len() as u64);
    assert!(
        put.etag.as_deref().is_some_and(|e| e.ends_with("-3")),
        "multipart etag: {put:?}"
    );
    assert!(
        s3.get_bytes("big", "dump.bin").await.expect("get") == data,
        "content differs"
    );
}

#[tokio::test]
async fn missing_bucket_and_key_are_typed() {
    let moto = Moto::start();
    let s3 = moto.store();
    let err = s3
        .check_bucket("no-such-bucket")
        .await
        .expect_err("missing");
    assert!(
        matches!(err, ObjStoreError::NoSuchBucket { ref bucket } if bucket == "no-such-bucket"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-bucket"));
    assert_no_secret(&err);

    let err = s3
        .put_bytes("no-such-bucket", "k", b"x".to_vec(), "text/plain")
        .await
        .expect_err("put");
    assert!(matches!(err, ObjStoreError::NoSuchBucket { .. }), "{err:?}");

    s3.create_bucket("present").await.expect("create");
    let err = s3
        .get_bytes("present", "missing/key.csv")
        .await
        .expect_err("no key");
    assert!(matches!(err, ObjStoreError::NoSuchKey { .. }), "{err:?}");
    assert!(
        err.to_string().contains("s3://present/missing/key.csv"),
        "{err}"
    );

    let missing = std::path::Path::new("/nonexistent/export.csv");
    let err = s3
        .put_file("present", "k", missing)
        .await
        .expect_err("no file");
    assert!(
        matches!(err, ObjStoreError::Io { .. })
            && err.to_string().contains("/nonexistent/export.csv")
    );
}

/// moto accepts any credentials unless IAM auth is switched on with
/// `INITIAL_NO_AUTH_ACTION_COUNT`: then requests after the first N must use keys of moto IAM
/// users, so our made-up key is refused with 403 like a wrong key on real S3.
#[tokio::test]
async fn wrong_credentials() {
    let open = Moto::start();
    let s3 = open.store();
    s3.create_bucket("anykey").await.expect("create");
    let other = S3Store::new(&connection(Some(open.endpoint()), "SOMETHING-ELSE")).expect("store");
    other
        .check_bucket("anykey")
        .await
        .expect("moto without IAM auth accepts any credentials");

    let strict = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]);
    let s3 = strict.store();
    s3.create_bucket("locked")
        .await
        .expect("first request is unauthenticated");
    let err = s3
        .check_bucket("locked")
        .await
        .expect_err("unknown access key");
    assert!(
        matches!(err, ObjStoreError::AccessDenied { ref bucket, .. } if bucket == "locked"),
        "{err:?}"
    );
    assert_no_secret(&err);
    let err = s3
        .put_bytes("locked", "k", b"x".to_vec(), "text/plain")
        .await
        .expect_err("put");
    assert!(
        matches!(err, ObjStoreError::AccessDenied { ref code, .. } if code == "InvalidAccessKeyId"),
        "{err:?}"
    );
    assert_no_secret(&err);
}

#[tokio::test]
async fn unreachable_endpoint_is_reported_without_secrets() {
    let port = free_port(); // nothing listens here
    let s3 = S3Store::new(&connection(
        Some(format!("http://127.0.0.1:{port}")),
        "AKID",
    ))
    .expect("store");
    let err = s3.check_bucket("exports").await.expect_err("refused");
    assert!(matches!(err, ObjStoreError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("exports"), "{err}");
    assert_no_secret(&err);
}
