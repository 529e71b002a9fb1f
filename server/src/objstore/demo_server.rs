//! Demo mode's S3-compatible endpoint: buckets are folders under one directory, so the shipped
//! flows that publish to S3 work on a fresh install without an account or a second server.
//!
//! It serves, path style, exactly the operations trialflow's own client sends (HeadBucket,
//! CreateBucket, ListObjectsV2, PutObject, GetObject, HeadObject, DeleteObject and multipart
//! upload), streaming bodies to disk. It is a demo target, not a storage server: a request is
//! accepted when its SigV4 `Authorization` names the demo access key id (the signature itself is
//! not recomputed), and the real S3 client of the product is what talks to it.
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

pub const DEMO_ACCESS_KEY_ID: &str = "demo-access-key";
pub const DEMO_SECRET_ACCESS_KEY: &str = "demo-secret-key";
/// The bucket demo mode creates and points `aws_default` at.
pub const DEMO_BUCKET: &str = "demo-exports";
/// Parts of unfinished multipart uploads live here, outside every bucket.
const UPLOADS_DIR: &str = ".uploads";

#[derive(Clone)]
struct DemoS3 {
    root: Arc<PathBuf>,
}

/// The endpoint over `root` (created, with [`DEMO_BUCKET`] in it).
pub async fn router(root: &Path) -> std::io::Result<Router> {
    tokio::fs::create_dir_all(root.join(DEMO_BUCKET)).await?;
    tokio::fs::create_dir_all(root.join(UPLOADS_DIR)).await?;
    let state = DemoS3 {
        root: Arc::new(root.to_path_buf()),
    };
    Ok(Router::new()
        .route("/{bucket}", any(bucket_request))
        .route("/{bucket}/", any(bucket_request))
        .route("/{bucket}/{*key}", any(object_request))
        .layer(middleware::from_fn(require_demo_key))
        .with_state(state))
}

async fn require_demo_key(request: Request, next: Next) -> Response {
    let signed_by_demo = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|credential| credential.split('/').next())
        == Some(DEMO_ACCESS_KEY_ID);
    if signed_by_demo {
        next.run(request).await
    } else {
        s3_error(
            StatusCode::FORBIDDEN,
            "InvalidAccessKeyId",
            "requests must be signed with the demo access key id",
        )
        .into_response()
    }
}

/// An S3 error document, answered as the response.
struct S3Error {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn s3_error(status: StatusCode, code: &'static str, message: &str) -> S3Error {
    S3Error {
        status,
        code,
        message: message.to_owned(),
    }
}

impl IntoResponse for S3Error {
    fn into_response(self) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
            self.code,
            xml_escape(&self.message)
        );
        (
            self.status,
            [(header::CONTENT_TYPE, "application/xml")],
            body,
        )
            .into_response()
    }
}

type S3Result<T = Response> = Result<T, S3Error>;

fn xml(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{body}"),
    )
        .into_response()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn internal(e: std::io::Error) -> S3Error {
    tracing::warn!(error = %e, "demo S3 endpoint: storage error");
    s3_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        &e.to_string(),
    )
}

/// S3's bucket naming rules, short form: 3–63 of `a-z 0-9 . -`, starting and ending alphanumeric.
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A key as a relative path that cannot leave its bucket.
fn key_path(key: &str) -> Option<PathBuf> {
    let safe = !key.is_empty()
        && key.len() <= 1024
        && !key.contains('\0')
        && key
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."));
    safe.then(|| PathBuf::from(key))
}

impl DemoS3 {
    fn bucket_dir(&self, bucket: &str) -> S3Result<PathBuf> {
        if !valid_bucket(bucket) {
            return Err(s3_error(
                StatusCode::BAD_REQUEST,
                "InvalidBucketName",
                &format!("`{bucket}` is not a valid bucket name"),
            ));
        }
        Ok(self.root.join(bucket))
    }

    fn existing_bucket(&self, bucket: &str) -> S3Result<PathBuf> {
        let dir = self.bucket_dir(bucket)?;
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchBucket",
                &format!("bucket `{bucket}` does not exist"),
            ))
        }
    }

    fn upload_dir(&self, upload_id: &str) -> S3Result<PathBuf> {
        let dir = self.root.join(UPLOADS_DIR).join(upload_id);
        let well_formed = upload_id.len() == 32 && upload_id.bytes().all(|b| b.is_ascii_hexdigit());
        if well_formed && dir.is_dir() {
            Ok(dir)
        } else {
            Err(s3_error(
                StatusCode::NOT_FOUND,
                "NoSuchUpload",
                &format!("upload `{upload_id}` does not exist"),
            ))
        }
    }
}

async fn bucket_request(
    State(s3): State<DemoS3>,
    UrlPath(bucket): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
) -> Response {
    let result = match method {
        Method::HEAD => s3
            .existing_bucket(&bucket)
            .map(|_| StatusCode::OK.into_response()),
        Method::PUT => match s3.bucket_dir(&bucket) {
            Ok(dir) => match tokio::fs::create_dir_all(&dir).await {
                Ok(()) => Ok(StatusCode::OK.into_response()),
                Err(e) => Err(internal(e)),
            },
            Err(e) => Err(e),
        },
        Method::GET => match s3.existing_bucket(&bucket) {
            Ok(dir) => list_objects(&bucket, &dir, query.get("prefix").map(String::as_str)).await,
            Err(e) => Err(e),
        },
        _ => Err(not_implemented(&method)),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn not_implemented(method: &Method) -> S3Error {
    s3_error(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        &format!("the demo S3 endpoint does not serve this {method} request"),
    )
}

/// ListObjectsV2 without paging (a demo bucket is small): every key under `prefix`, sorted.
async fn list_objects(bucket: &str, dir: &Path, prefix: Option<&str>) -> S3Result {
    let mut keys = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let mut entries = tokio::fs::read_dir(&folder).await.map_err(internal)?;
        while let Some(entry) = entries.next_entry().await.map_err(internal)? {
            let meta = entry.metadata().await.map_err(internal)?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if let Ok(relative) = entry.path().strip_prefix(dir) {
                let key = relative.to_string_lossy().replace('\\', "/");
                if prefix.is_none_or(|p| key.starts_with(p)) && !key.contains(".part-") {
                    keys.push((key, meta.len()));
                }
            }
        }
    }
    keys.sort();
    let contents: String = keys
        .iter()
        .map(|(key, size)| {
            format!(
                "<Contents><Key>{}</Key><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                xml_escape(key)
            )
        })
        .collect();
    Ok(xml(format!(
        "<ListBucketResult><Name>{}</Name><Prefix>{}</Prefix><KeyCount>{}</KeyCount>\
         <MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>{contents}</ListBucketResult>",
        xml_escape(bucket),
        xml_escape(prefix.unwrap_or_default()),
        keys.len()
    )))
}

async fn object_request(
    State(s3): State<DemoS3>,
    UrlPath((bucket, key)): UrlPath<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    body: Body,
) -> Response {
    let bucket_dir = match s3.existing_bucket(&bucket) {
        Ok(dir) => dir,
        Err(e) => return e.into_response(),
    };
    let Some(relative) = key_path(&key) else {
        return s3_error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            &format!("key `{key}` has an empty, `.` or `..` segment"),
        )
        .into_response();
    };
    let path = bucket_dir.join(relative);
    let upload = query.get("uploadId").map(String::as_str);
    let result = match (&method, upload) {
        (&Method::PUT, Some(upload_id)) => {
            upload_part(&s3, upload_id, query.get("partNumber"), body).await
        }
        (&Method::PUT, None) => put_object(&path, body).await,
        (&Method::POST, None) if query.contains_key("uploads") => {
            create_upload(&s3, &bucket, &key).await
        }
        (&Method::POST, Some(upload_id)) => {
            complete_upload(&s3, &bucket, &key, &path, upload_id, body).await
        }
        (&Method::DELETE, Some(upload_id)) => s3.upload_dir(upload_id).and_then(|dir| {
            std::fs::remove_dir_all(dir)
                .map(|()| StatusCode::NO_CONTENT.into_response())
                .map_err(internal)
        }),
        (&Method::DELETE, None) => match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(StatusCode::NO_CONTENT.into_response())
            }
            Err(e) => Err(internal(e)),
        },
        (&Method::GET, None) | (&Method::HEAD, None) => {
            get_object(&bucket, &key, &path, method == Method::HEAD).await
        }
        _ => Err(not_implemented(&method)),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Streams the body into `path` through a temporary name, so no reader sees a partial object.
/// Answers the ETag (a digest of the content).
async fn write_body(path: &Path, body: Body) -> S3Result<String> {
    let parent = path.parent().unwrap_or(path);
    tokio::fs::create_dir_all(parent).await.map_err(internal)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = parent.join(format!(".{name}.part-{}", rand::random::<u64>()));
    let written = async {
        let mut file = tokio::fs::File::create(&temp).await?;
        let mut digest = Sha256::new();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.try_next().await.map_err(std::io::Error::other)? {
            digest.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        tokio::fs::rename(&temp, path).await?;
        Ok::<_, std::io::Error>(etag_of(digest))
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    written.map_err(internal)
}

fn etag_of(digest: Sha256) -> String {
    format!("\"{}\"", crate::export::hex(&digest.finalize()[..16]))
}

fn with_etag(etag: &str) -> Response {
    let mut response = StatusCode::OK.into_response();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

async fn put_object(path: &Path, body: Body) -> S3Result {
    let etag = write_body(path, body).await?;
    Ok(with_etag(&etag))
}

async fn get_object(bucket: &str, key: &str, path: &Path, head: bool) -> S3Result {
    let missing = || {
        s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            &format!("s3://{bucket}/{key} does not exist"),
        )
    };
    let meta = tokio::fs::metadata(path).await.map_err(|_| missing())?;
    if !meta.is_file() {
        return Err(missing());
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.len()));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(super::content_type_for(path)),
    );
    if head {
        return Ok((StatusCode::OK, headers).into_response());
    }
    let file = tokio::fs::File::open(path).await.map_err(internal)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((StatusCode::OK, headers, body).into_response())
}

async fn create_upload(s3: &DemoS3, bucket: &str, key: &str) -> S3Result {
    let upload_id = format!("{:032x}", rand::random::<u128>());
    tokio::fs::create_dir_all(s3.root.join(UPLOADS_DIR).join(&upload_id))
        .await
        .map_err(internal)?;
    Ok(xml(format!(
        "<InitiateMultipartUploadResult><Bucket>{}</Bucket><Key>{}</Key><UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>",
        xml_escape(bucket),
        xml_escape(key)
    )))
}

async fn upload_part(
    s3: &DemoS3,
    upload_id: &str,
    part_number: Option<&String>,
    body: Body,
) -> S3Result {
    let number = part_number
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| {
            s3_error(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "partNumber must be an integer from 1 to 10000",
            )
        })?;
    let dir = s3.upload_dir(upload_id)?;
    let etag = write_body(&dir.join(format!("{number:05}")), body).await?;
    Ok(with_etag(&etag))
}

/// Joins the parts the completion names, in its order, into the object.
async fn complete_upload(
    s3: &DemoS3,
    bucket: &str,
    key: &str,
    path: &Path,
    upload_id: &str,
    body: Body,
) -> S3Result {
    let dir = s3.upload_dir(upload_id)?;
    let request = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .map_err(|e| s3_error(StatusCode::BAD_REQUEST, "MalformedXML", &e.to_string()))?;
    let request = String::from_utf8_lossy(&request);
    let numbers: Vec<u32> = request
        .split("<PartNumber>")
        .skip(1)
        .filter_map(|rest| rest.split('<').next()?.trim().parse().ok())
        .collect();
    if numbers.is_empty() {
        return Err(s3_error(
            StatusCode::BAD_REQUEST,
            "MalformedXML",
            "the completion names no parts",
        ));
    }
    let parts: Vec<PathBuf> = numbers
        .iter()
        .map(|n| dir.join(format!("{n:05}")))
        .collect();
    if let Some(missing) = parts.iter().position(|p| !p.is_file()) {
        return Err(s3_error(
            StatusCode::BAD_REQUEST,
            "InvalidPart",
            &format!("part {} was not uploaded", numbers[missing]),
        ));
    }
    let files = futures::stream::iter(parts.clone())
        .then(|part| async move { tokio::fs::File::open(part).await })
        .map_ok(tokio_util::io::ReaderStream::new)
        .try_flatten();
    let etag = write_body(path, Body::from_stream(files)).await?;
    tokio::fs::remove_dir_all(&dir).await.map_err(internal)?;
    let etag = format!("{}-{}\"", etag.trim_end_matches('"'), parts.len());
    Ok(xml(format!(
        "<CompleteMultipartUploadResult><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
        xml_escape(bucket),
        xml_escape(key),
        xml_escape(&etag)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_their_bucket() {
        assert_eq!(key_path("a/b.csv"), Some(PathBuf::from("a/b.csv")));
        for bad in ["", "../x", "a/../../x", "/abs", "a//b", "a/./b", "a\0b"] {
            assert_eq!(key_path(bad), None, "{bad:?} must be refused");
        }
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(valid_bucket(DEMO_BUCKET));
        for bad in ["ab", "Upper", "-lead", "trail-", "under_score", ".uploads"] {
            assert!(!valid_bucket(bad), "{bad} must be refused");
        }
    }
}
