//! Downloads of the files runs wrote: any signed-in user (see `super::plain_routes`), local files inside the export root
//! only, streamed (never read into memory).
use super::HttpState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub async fn download(State(state): State<HttpState>, Path(id): Path<i64>) -> Response {
    let artifact = match state.db.artifact(id).await {
        Ok(Some(a)) => a,
        Ok(None) => return (StatusCode::NOT_FOUND, "No such file.").into_response(),
        Err(e) => {
            tracing::error!(error = %e, artifact = id, "artifact lookup failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "Artifact lookup failed.").into_response();
        }
    };
    if artifact.uri.starts_with("s3://") {
        let message = format!("This file is in object storage at {}.", artifact.uri);
        return (StatusCode::NOT_FOUND, message).into_response();
    }
    let path = std::path::PathBuf::from(&artifact.uri);
    // A database row must not be able to point the server at an arbitrary file.
    let inside = tokio::fs::canonicalize(&path)
        .await
        .ok()
        .filter(|p| p.starts_with(&state.export_root));
    let Some(path) = inside else {
        return (StatusCode::NOT_FOUND, "The file is no longer there.").into_response();
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return (StatusCode::NOT_FOUND, "The file is no longer there.").into_response(),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("export")
        .replace(['"', '\\'], "_");
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    (
        [
            (
                header::CONTENT_TYPE,
                crate::objstore::content_type_for(&path).to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CONTENT_LENGTH, artifact.bytes.to_string()),
            (
                header::HeaderName::from_static("x-content-sha256"),
                artifact.sha256,
            ),
        ],
        body,
    )
        .into_response()
}
