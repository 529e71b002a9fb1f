//! The audit log: who did what, when. Admins only.
use crate::error::AppError;
use crate::model::AuditPage;
use leptos::prelude::*;

#[server(prefix = "/api/admin", endpoint = "audit_log")]
pub async fn audit_log(action: Option<String>, page: Option<u32>) -> Result<AuditPage, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Admin)?;
    console()?
        .audit_log(action, page.unwrap_or(1))
        .await
        .map_err(respond)
}
