//! Pools: anyone signed in sees them; ops change them.
use crate::error::AppError;
use crate::model::PoolInfo;
use leptos::prelude::*;

#[server(prefix = "/api/viewer", endpoint = "list_pools")]
pub async fn list_pools() -> Result<Vec<PoolInfo>, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    require(Role::Viewer)?;
    console()?.list_pools().await.map_err(respond)
}

/// Creates a pool or changes its slots and description.
#[server(prefix = "/api/op", endpoint = "save_pool")]
pub async fn save_pool(
    name: String,
    slots: String,
    description: Option<String>,
) -> Result<PoolInfo, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    let actor = require(Role::Op)?;
    // Parsed here so a typo is answered at the field, not as a malformed request.
    let slots = slots.trim().parse::<i64>().map_err(|_| {
        respond(AppError::invalid(
            "slots",
            format!("'{}' is not a whole number", slots.trim()),
        ))
    })?;
    console()?
        .save_pool(
            &actor,
            &name,
            slots,
            description.as_deref().unwrap_or("").trim(),
        )
        .await
        .map_err(respond)
}

#[server(prefix = "/api/op", endpoint = "delete_pool")]
pub async fn delete_pool(name: String) -> Result<String, AppError> {
    use crate::model::Role;
    use crate::port::{console, require, respond};
    let actor = require(Role::Op)?;
    console()?
        .delete_pool(&actor, &name)
        .await
        .map_err(respond)?;
    Ok(name)
}
