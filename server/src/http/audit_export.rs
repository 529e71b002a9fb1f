//! `/audit/export.csv` and `/audit/export.json`: the audit log with its hash chain, admins only (see `super::plain_routes`).
use super::HttpState;
use crate::audit::ExportFormat;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub async fn export(State(state): State<HttpState>, Path(file): Path<String>) -> Response {
    let format = match file.as_str() {
        "export.csv" => ExportFormat::Csv,
        "export.json" => ExportFormat::Json,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "Export as export.csv or export.json.",
            )
                .into_response();
        }
    };
    let secrets = state.engine.connections().known_secrets();
    match crate::audit::export(&state.db, &secrets, format).await {
        Ok(body) => {
            let name = format!(
                "attachment; filename=\"trialflow-audit-{}.{}\"",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                format.extension()
            );
            (
                [
                    (header::CONTENT_TYPE, format.content_type().to_string()),
                    (header::CONTENT_DISPOSITION, name),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "audit export failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The audit export failed; see the server log.",
            )
                .into_response()
        }
    }
}
