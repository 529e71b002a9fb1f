use crate::error::AppError;
use crate::model::Health;
use leptos::prelude::*;

/// Database and service health for the dashboard.
#[server(prefix = "/api/viewer", endpoint = "system_health")]
pub async fn system_health() -> Result<Health, AppError> {
    use crate::model::Role;
    use crate::port::{backend, require};
    require(Role::Viewer)?;
    Ok(backend()?.health().await)
}

/// Everything the dashboard shows, in one call.
#[server(prefix = "/api/viewer", endpoint = "dashboard")]
pub async fn dashboard() -> Result<crate::model::DashboardInfo, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?.dashboard().await.map_err(respond)
}
