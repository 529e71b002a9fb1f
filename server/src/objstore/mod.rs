//! S3 (and S3-compatible: MinIO, Ceph, moto) object store for export uploads.
//!
//! The client is built from a connection's static credentials without aws-config (no profile
//! files, IMDS or environment lookups: the connection is the only source of truth). HTTP goes
//! through smithy's hyper 1 client with rustls/ring, which serves both `https://` (AWS) and plain
//! `http://` custom endpoints.

pub mod demo_server;

use crate::secrets::{SecretString, redact_text};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Region used when a connection leaves it blank (S3-compatible servers mostly ignore it).
pub const DEFAULT_REGION: &str = "us-east-1";
/// Files larger than this are uploaded in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Part size for multipart uploads.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3's minimum size of every part but the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;

/// An S3 connection as stored (secret already decrypted by the caller).
#[derive(Debug, Clone)]
pub struct AwsConnection {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// Blank means [`DEFAULT_REGION`].
    pub region: String,
    /// Custom endpoint (`http://127.0.0.1:9000`, `https://minio.example.org`); `None` = AWS.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    pub path_style: bool,
}

/// Outcome of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    pub bytes: u64,
    /// ETag without the surrounding quotes (multipart ETags end in `-<parts>`).
    pub etag: Option<String>,
}

/// Errors name the operation, bucket and key; never credentials (messages from the SDK are
/// additionally scrubbed of the secret key).
#[derive(Debug, thiserror::Error)]
pub enum ObjStoreError {
    #[error("invalid S3 URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("invalid S3 connection: {0}")]
    InvalidConfig(String),
    #[error("bucket `{bucket}` does not exist (or is not visible to these credentials)")]
    NoSuchBucket { bucket: String },
    #[error("object s3://{bucket}/{key} does not exist")]
    NoSuchKey { bucket: String, key: String },
    #[error(
        "access to bucket `{bucket}` denied ({code}): check the access key, secret and the \
         key's permissions"
    )]
    AccessDenied { bucket: String, code: String },
    #[error("S3 endpoint unreachable during {op} on bucket `{bucket}`: {message}")]
    Unreachable {
        op: &'static str,
        bucket: String,
        message: String,
    },
    #[error("S3 {op} on s3://{bucket}/{key} failed: {message}")]
    Request {
        op: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Splits `s3://bucket/key` into bucket and key.
pub fn parse_s3_url(url: &str) -> Result<(String, String), ObjStoreError> {
    let invalid = |reason| ObjStoreError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("must start with s3://"))?;
    let (bucket, key) = rest
        .split_once('/')
        .ok_or_else(|| invalid("missing object key after the bucket"))?;
    if bucket.is_empty() {
        return Err(invalid("missing bucket name"));
    }
    if !valid_bucket_name(bucket) {
        return Err(invalid(
            "bucket names are 3-63 characters of a-z 0-9 . - and start/end with a letter or digit",
        ));
    }
    check_object_key(key).map_err(invalid)?;
    Ok((bucket.to_owned(), key.to_owned()))
}

/// Keys are names, not paths: tools that mirror a bucket onto a disk would resolve `.` and
/// `..` segments, so they are refused like control characters and over-long keys.
pub fn check_object_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("missing object key after the bucket");
    }
    if key.len() > 1024 {
        return Err("object key longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return Err("object key must not start with /");
    }
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err("object key must not contain . or .. segments");
    }
    if key.chars().any(char::is_control) {
        return Err("object key must not contain control characters");
    }
    Ok(())
}

fn valid_bucket_name(bucket: &str) -> bool {
    let bytes = bucket.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Content type from the file extension of an export.
pub fn content_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("jsonl" | "ndjson") => "application/x-ndjson",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Some("sqlite" | "db") => "application/vnd.sqlite3",
        Some("gz") => "application/gzip",
        Some("zip") => "application/zip",
        Some("txt" | "log") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// The SDK appends the bucket to an endpoint's path as it is, so a server under a path prefix
/// (`http://host/s3`) needs the trailing slash to get `/s3/bucket` rather than `/s3bucket`.
fn endpoint_with_base_path(endpoint: &str) -> String {
    let after_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let has_path = after_scheme
        .find('/')
        .is_some_and(|i| i + 1 < after_scheme.len());
    if has_path && !endpoint.ends_with('/') {
        format!("{endpoint}/")
    } else {
        endpoint.to_owned()
    }
}

/// An S3 client bound to one connection.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    // Kept only to scrub it from SDK error messages.
    secret: SecretString,
    region: String,
    multipart_threshold: u64,
    part_size: u64,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("region", &self.region)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the client; no request is made (use [`S3Store::check_bucket`] to test).
    pub fn new(conn: &AwsConnection) -> Result<S3Store, ObjStoreError> {
        if conn.access_key_id.trim().is_empty() || conn.secret_access_key.is_empty() {
            return Err(ObjStoreError::InvalidConfig(
                "access key id and secret access key are required".into(),
            ));
        }
        let region = match conn.region.trim() {
            "" => DEFAULT_REGION.to_owned(),
            r => r.to_owned(),
        };
        let credentials = Credentials::new(
            conn.access_key_id.trim(),
            conn.secret_access_key.expose_secret(),
            None,
            None,
            "trialflow-connection",
        );
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .credentials_provider(credentials)
            .http_client(http_client)
            .force_path_style(conn.path_style)
            // Connect fast-fail; no overall limit because large uploads legitimately take long.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            );
        if let Some(endpoint) = conn.endpoint_url.as_deref().map(str::trim) {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ObjStoreError::InvalidConfig(format!(
                    "endpoint URL `{endpoint}` must start with http:// or https://"
                )));
            }
            // S3-compatible servers often reject the newer default CRC checksums/aws-chunked
            // uploads; send checksums only where the API requires them.
            builder = builder
                .endpoint_url(endpoint_with_base_path(endpoint))
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            secret: conn.secret_access_key.clone(),
            region,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
        })
    }

    /// Overrides when `put_file` switches to multipart and the part size (min 5 MiB).
    pub fn with_multipart(mut self, threshold: u64, part_size: u64) -> S3Store {
        self.multipart_threshold = threshold;
        self.part_size = part_size.max(MIN_PART_SIZE);
        self
    }

    /// The underlying SDK client, for operations this wrapper lacks.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// HeadBucket: succeeds when the bucket exists and the credentials may use it
    /// (the "test connection" button).
    pub async fn check_bucket(&self, bucket: &str) -> Result<(), ObjStoreError> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| self.map_err(e, "HeadBucket", bucket, ""))?;
        Ok(())
    }

    /// Creates a bucket in the connection's region (tests and first-time setup).
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), ObjStoreError> {
        let mut request = self.client.create_bucket().bucket(bucket);
        // us-east-1 is the one region S3 rejects an explicit location constraint for.
        if self.region != DEFAULT_REGION {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        request
            .send()
            .await
            .map_err(|e| self.map_err(e, "CreateBucket", bucket, ""))?;
        Ok(())
    }

    /// Uploads an in-memory body.
    pub async fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        bytes: impl Into<Vec<u8>>,
        content_type: &str,
    ) -> Result<PutResult, ObjStoreError> {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        let out = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| self.map_err(e, "PutObject", bucket, key))?;
        Ok(PutResult {
            bytes: len,
            etag: clean_etag(out.e_tag()),
        })
    }

    /// Uploads a file, streaming it from disk; multipart above the threshold.
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
    ) -> Result<PutResult, ObjStoreError> {
        let io_err = |source| ObjStoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let size = tokio::fs::metadata(path).await.map_err(io_err)?.len();
        let content_type = content_type_for(path);
        if size > self.multipart_threshold {
            return self
                .put_multipart(bucket, key, path, size, content_type)
                .await;
        }
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(size))
            .build()
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))?;
        let out = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .content_length(size as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| self.map_err(e, "PutObject", bucket, key))?;
        tracing::debug!(bucket, key, bytes = size, "uploaded file to S3");
        Ok(PutResult {
            bytes: size,
            etag: clean_etag(out.e_tag()),
        })
    }

    async fn put_multipart(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        size: u64,
        content_type: &str,
    ) -> Result<PutResult, ObjStoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| self.map_err(e, "CreateMultipartUpload", bucket, key))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| ObjStoreError::Request {
                op: "CreateMultipartUpload",
                bucket: bucket.into(),
                key: key.into(),
                message: "response carried no upload id".into(),
            })?
            .to_owned();
        match self.upload_parts(bucket, key, path, size, &upload_id).await {
            Ok(etag) => {
                tracing::debug!(bucket, key, bytes = size, "uploaded file to S3 in parts");
                Ok(PutResult { bytes: size, etag })
            }
            Err(e) => {
                // Abandoned parts are billed until aborted; the original error matters more
                // than a failed abort.
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await
                {
                    let abort = self.map_err(abort, "AbortMultipartUpload", bucket, key);
                    tracing::warn!(bucket, key, error = %abort, "could not abort multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<Option<String>, ObjStoreError> {
        // Stay within S3's 10 000-part limit for very large files.
        let part_size = self.part_size.max(size.div_ceil(MAX_PARTS));
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let len = part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| ObjStoreError::Io {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(e),
                })?;
            let out = self
                .client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| self.map_err(e, "UploadPart", bucket, key))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            offset += len;
            number += 1;
        }
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.map_err(e, "CompleteMultipartUpload", bucket, key))?;
        Ok(clean_etag(done.e_tag()))
    }

    /// Downloads a whole object into memory (tests, small files).
    pub async fn get_bytes(&self, bucket: &str, key: &str) -> Result<Vec<u8>, ObjStoreError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err(e, "GetObject", bucket, key))?;
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| ObjStoreError::Request {
                op: "GetObject",
                bucket: bucket.into(),
                key: key.into(),
                message: self.scrub(&DisplayErrorContext(&e).to_string()),
            })?;
        Ok(data.into_bytes().to_vec())
    }

    /// Turns an SDK error into a typed error naming bucket/key only.
    fn map_err<E, R>(
        &self,
        err: SdkError<E, R>,
        op: &'static str,
        bucket: &str,
        key: &str,
    ) -> ObjStoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug + HttpStatus,
    {
        let status = err.raw_response().map(HttpStatus::status_code);
        let code = err.code().map(str::to_owned);
        match (&err, status, code.as_deref()) {
            (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => {
                ObjStoreError::Unreachable {
                    op,
                    bucket: bucket.into(),
                    message: self.scrub(&DisplayErrorContext(&err).to_string()),
                }
            }
            (_, _, Some("NoSuchKey")) => ObjStoreError::NoSuchKey {
                bucket: bucket.into(),
                key: key.into(),
            },
            (_, _, Some("NoSuchBucket")) => ObjStoreError::NoSuchBucket {
                bucket: bucket.into(),
            },
            // HEAD responses have no body, so only the status tells what happened.
            (_, Some(404), _) if key.is_empty() => ObjStoreError::NoSuchBucket {
                bucket: bucket.into(),
            },
            (
                _,
                _,
                Some(
                    c @ ("AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "ExpiredToken"),
                ),
            ) => ObjStoreError::AccessDenied {
                bucket: bucket.into(),
                code: c.to_owned(),
            },
            (_, Some(403), _) => ObjStoreError::AccessDenied {
                bucket: bucket.into(),
                code: code.unwrap_or_else(|| "403 Forbidden".into()),
            },
            _ => {
                let mut message = match (code.as_deref(), err.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_owned(),
                    _ => DisplayErrorContext(&err).to_string(),
                };
                if let Some(s) = status {
                    message.push_str(&format!(" (HTTP {s})"));
                }
                ObjStoreError::Request {
                    op,
                    bucket: bucket.into(),
                    key: key.into(),
                    message: self.scrub(&message),
                }
            }
        }
    }

    /// Belt and braces: SDK messages should never contain the secret, but make sure.
    fn scrub(&self, message: &str) -> String {
        redact_text(message, &[self.secret.expose_secret()])
    }
}

/// Status code of a raw response, whatever response type the SDK error carries.
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn clean_etag(etag: Option<&str>) -> Option<String> {
    etag.map(|e| e.trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_under_a_path_keep_it_before_the_bucket() {
        for (given, used) in [
            ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
            ("http://127.0.0.1:9000/", "http://127.0.0.1:9000/"),
            ("http://127.0.0.1:3000/s3", "http://127.0.0.1:3000/s3/"),
            ("https://gw.example.org/a/b/", "https://gw.example.org/a/b/"),
        ] {
            assert_eq!(endpoint_with_base_path(given), used);
        }
    }

    #[test]
    fn parse_s3_urls() {
        assert_eq!(
            parse_s3_url("s3://exports/study/a b.csv").expect("valid"),
            ("exports".into(), "study/a b.csv".into())
        );
        assert_eq!(
            parse_s3_url("s3://my.bucket-1/k").expect("valid"),
            ("my.bucket-1".into(), "k".into())
        );
        for (url, why) in [
            ("https://exports/key", "s3://"),
            ("s3://exports", "missing object key"),
            ("s3://exports/", "missing object key"),
            ("s3:///key", "missing bucket"),
            ("s3://Exports/key", "bucket names"),
            ("s3://ab/key", "bucket names"),
            ("s3://-bucket/key", "bucket names"),
        ] {
            let err = parse_s3_url(url).expect_err(url).to_string();
            assert!(err.contains(why) && err.contains(url), "{url}: {err}");
        }
        let long = format!("s3://bucket/{}", "k".repeat(1025));
        assert!(parse_s3_url(&long).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type_for(Path::new("a/STUDY.CSV")), "text/csv");
        assert_eq!(
            content_type_for(Path::new("x.parquet")),
            "application/vnd.apache.parquet"
        );
        assert_eq!(
            content_type_for(Path::new("noext")),
            "application/octet-stream"
        );
    }

    fn conn(endpoint: Option<&str>) -> AwsConnection {
        AwsConnection {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            region: String::new(),
            endpoint_url: endpoint.map(str::to_owned),
            path_style: true,
        }
    }

    #[test]
    fn config_validation_and_debug() {
        let err = S3Store::new(&conn(Some("minio:9000"))).expect_err("scheme");
        assert!(err.to_string().contains("http://"));
        let mut empty = conn(None);
        empty.secret_access_key = SecretString::default();
        assert!(matches!(
            S3Store::new(&empty),
            Err(ObjStoreError::InvalidConfig(_))
        ));

        let c = conn(Some("http://127.0.0.1:1"));
        assert!(!format!("{c:?}").contains("EXAMPLEKEY"));
        let store = S3Store::new(&c).expect("store");
        assert!(!format!("{store:?}").contains("EXAMPLEKEY"));
        let store = store.with_multipart(1, 1);
        assert_eq!(store.part_size, MIN_PART_SIZE);
    }
}
