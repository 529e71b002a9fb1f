//! Connections: op and admin only. Nothing here ever returns a secret value.
use crate::error::AppError;
use crate::model::{ConnectionInfo, ConnectionInput, ConnectionTest};
use leptos::prelude::*;

#[server(prefix = "/api/op", endpoint = "list_connections")]
pub async fn list_connections() -> Result<Vec<ConnectionInfo>, AppError> {
    use crate::model::Role;
    use crate::port::{backend, require, respond};
    require(Role::Op)?;
    backend()?.list_connections().await.map_err(respond)
}

/// The provider's `describe_connection()` JSON: settings, `***` and `<field>_configured`.
#[server(prefix = "/api/op", endpoint = "describe_connection")]
pub async fn describe_connection(conn_id: String) -> Result<serde_json::Value, AppError> {
    use crate::model::Role;
    use crate::port::{backend, require, respond};
    require(Role::Op)?;
    backend()?
        .describe_connection(&conn_id)
        .await
        .map_err(respond)
}

/// Creates (`input.create`) or edits a connection; blank secret inputs keep stored values.
#[server(prefix = "/api/op", endpoint = "save_connection")]
pub async fn save_connection(input: ConnectionInput) -> Result<ConnectionInfo, AppError> {
    use crate::model::Role;
    use crate::port::{backend, require, respond};
    let actor = require(Role::Op)?;
    backend()?
        .save_connection(&actor, input)
        .await
        .map_err(respond)
}

#[server(prefix = "/api/op", endpoint = "delete_connection")]
pub async fn delete_connection(conn_id: String) -> Result<String, AppError> {
    use crate::model::Role;
    use crate::port::{backend, require, respond};
    let actor = require(Role::Op)?;
    backend()?
        .delete_connection(&actor, &conn_id)
        .await
        .map_err(respond)?;
    Ok(conn_id)
}

/// iMednet: lists studies (count and latency); S3: checks the default bucket.
#[server(prefix = "/api/op", endpoint = "test_connection")]
pub async fn test_connection(conn_id: String) -> Result<ConnectionTest, AppError> {
    use crate::model::Role;
    use crate::port::{backend, require, respond};
    let actor = require(Role::Op)?;
    backend()?
        .test_connection(&actor, &conn_id)
        .await
        .map_err(respond)
}
