use super::HttpState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// Liveness plus database status; 503 when the database does not answer.
pub async fn healthz(State(state): State<HttpState>) -> (StatusCode, Json<app::model::Health>) {
    let health = state.app.backend.health().await;
    let code = if health.database.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health))
}
