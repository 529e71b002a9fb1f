use crate::error::AppError;
use crate::model::{PasswordReset, Role, UserInfo};
use leptos::prelude::*;

#[server(prefix = "/api/admin", endpoint = "list_users")]
pub async fn list_users() -> Result<Vec<UserInfo>, AppError> {
    use crate::port::{backend, require, respond};
    require(Role::Admin)?;
    backend()?.list_users().await.map_err(respond)
}

#[server(prefix = "/api/admin", endpoint = "create_user")]
pub async fn create_user(
    username: String,
    role: Role,
    password: String,
) -> Result<UserInfo, AppError> {
    use crate::port::{backend, require, respond};
    let actor = require(Role::Admin)?;
    backend()?
        .create_user(&actor, &username, role, &password)
        .await
        .map_err(respond)
}

#[server(prefix = "/api/admin", endpoint = "set_user_role")]
pub async fn set_user_role(user_id: i64, role: Role) -> Result<UserInfo, AppError> {
    use crate::port::{backend, require, respond};
    let actor = require(Role::Admin)?;
    backend()?
        .set_user_role(&actor, user_id, role)
        .await
        .map_err(respond)
}

#[server(prefix = "/api/admin", endpoint = "set_user_disabled")]
pub async fn set_user_disabled(user_id: i64, disabled: bool) -> Result<UserInfo, AppError> {
    use crate::port::{backend, require, respond};
    let actor = require(Role::Admin)?;
    backend()?
        .set_user_disabled(&actor, user_id, disabled)
        .await
        .map_err(respond)
}

/// Sets a new password for a user; a blank password generates one, shown once.
#[server(prefix = "/api/admin", endpoint = "reset_user_password")]
pub async fn reset_user_password(
    user_id: i64,
    password: Option<String>,
) -> Result<PasswordReset, AppError> {
    use crate::port::{backend, require, respond};
    let actor = require(Role::Admin)?;
    let password = password.filter(|p| !p.is_empty());
    backend()?
        .reset_password(&actor, user_id, password)
        .await
        .map_err(respond)
}
