use crate::error::AppError;
use crate::model::CurrentUser;
use leptos::prelude::*;

/// The signed-in user, or `None`. Used by the header and the role-dependent controls.
#[server(prefix = "/api/public", endpoint = "whoami")]
pub async fn whoami() -> Result<Option<CurrentUser>, AppError> {
    Ok(crate::port::auth_context().user)
}
