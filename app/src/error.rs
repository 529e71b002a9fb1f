//! The one error type server functions return. Its messages are meant for the person at the
//! browser; internal details stay in the server log.
use crate::model::Role;
use leptos::server_fn::codec::JsonEncoding;
use leptos::server_fn::error::{FromServerFnError, ServerFnErrorErr};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AppError {
    #[error("Sign in to continue.")]
    Unauthenticated,
    #[error("Your session has expired. Sign in again.")]
    SessionExpired,
    #[error("This needs the {needed} role; you are signed in as {actual}.")]
    Forbidden { needed: Role, actual: Role },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Several fields are wrong at once (a form shows each message at its field).
    #[error("{}", join_fields(.0))]
    Fields(Vec<FieldError>),
    /// A flow run that did not give the result asked for; `kind` is flow_failed,
    /// task_not_completed, task_not_in_flow, empty_result or timeout.
    #[error("{message}")]
    FlowRun { kind: String, message: String },
    #[error("{0} was not found.")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(
        "Something went wrong on the server (reference {0}). The details are in the server log."
    )]
    Internal(String),
    #[error("The request could not be completed: {0}")]
    Request(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn join_fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl AppError {
    /// The message for one form field, if this error names it.
    pub fn for_field(&self, name: &str) -> Option<String> {
        match self {
            AppError::Invalid { field, message } if field == name => Some(message.clone()),
            AppError::Fields(errors) => errors
                .iter()
                .find(|e| e.field == name)
                .map(|e| e.message.clone()),
            _ => None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            AppError::Unauthenticated | AppError::SessionExpired => 401,
            AppError::Forbidden { .. } => 403,
            AppError::Invalid { .. } | AppError::Fields(_) | AppError::Request(_) => 400,
            AppError::NotFound(_) => 404,
            AppError::Conflict(_) => 409,
            AppError::FlowRun { kind, .. } => match kind.as_str() {
                "task_not_in_flow" | "empty_result" => 404,
                "timeout" => 504,
                _ => 409,
            },
            AppError::Internal(_) => 500,
        }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Args(msg) | ServerFnErrorErr::Deserialization(msg) => {
                AppError::Request(format!("malformed request: {msg}"))
            }
            other => AppError::Request(other.to_string()),
        }
    }
}
