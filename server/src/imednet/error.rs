//! Typed client errors. They never carry the API key or security key.

use std::time::Duration;

/// What the API said about a failed request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiErrorInfo {
    /// HTTP status.
    pub status: u16,
    /// iMednet error code (`1000` validation, `9000` unknown, `9001` unauthorized).
    pub code: Option<String>,
    pub description: String,
    /// `field.attribute` of a validation error.
    pub attribute: Option<String>,
    /// `field.value` of a validation error.
    pub value: Option<String>,
}

impl std::fmt::Display for ApiErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(c) = &self.code {
            write!(f, ", code {c}")?;
        }
        if !self.description.is_empty() {
            write!(f, ": {}", self.description)?;
        }
        if let Some(a) = &self.attribute {
            write!(f, " (attribute {a:?}")?;
            if let Some(v) = &self.value {
                write!(f, ", value {v:?}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImednetError {
    #[error("bad request: {0}")]
    BadRequest(ApiErrorInfo),
    #[error("unauthorized: {0}")]
    Unauthorized(ApiErrorInfo),
    /// Bad or missing keys (the gateway answers 403 `{"message":"Forbidden"}`).
    #[error("forbidden: {0}")]
    Forbidden(ApiErrorInfo),
    #[error("not found: {0}")]
    NotFound(ApiErrorInfo),
    #[error("conflict: {0}")]
    Conflict(ApiErrorInfo),
    /// 429 after the retries were used up (or on a POST that may not be retried further).
    #[error("rate limited: {info} (retry after {retry_after:?})")]
    RateLimited {
        info: ApiErrorInfo,
        retry_after: Option<Duration>,
    },
    /// 5xx, or any other unexpected status.
    #[error("server error: {0}")]
    Server(ApiErrorInfo),
    /// Connection failure, timeout or a broken body.
    #[error("network error{}: {message}", if *.timeout { " (timeout)" } else { "" })]
    Network { message: String, timeout: bool },
    /// The body was not the JSON we expected (malformed or truncated).
    #[error("cannot decode response: {0}")]
    Decode(String),
    /// Local misconfiguration or invalid input (nothing was sent).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A job ended in `failed`/`cancelled`.
    #[error("job {batch_id} ended as {state}")]
    JobFailed { batch_id: String, state: String },
    /// A job did not finish in time.
    #[error("job {batch_id} still {state} after {waited:?}")]
    JobTimeout {
        batch_id: String,
        state: String,
        waited: Duration,
    },
}

impl ImednetError {
    /// The API error details, when the server answered.
    pub fn info(&self) -> Option<&ApiErrorInfo> {
        match self {
            Self::BadRequest(i)
            | Self::Unauthorized(i)
            | Self::Forbidden(i)
            | Self::NotFound(i)
            | Self::Conflict(i)
            | Self::Server(i)
            | Self::RateLimited { info: i, .. } => Some(i),
            _ => None,
        }
    }

    /// HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.info().map(|i| i.status)
    }

    /// Build the typed error for a non-success answer.
    pub(crate) fn from_status(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        let info = parse_info(status, body);
        match status {
            400 => Self::BadRequest(info),
            401 => Self::Unauthorized(info),
            403 => Self::Forbidden(info),
            404 => Self::NotFound(info),
            409 => Self::Conflict(info),
            429 => Self::RateLimited { info, retry_after },
            _ => Self::Server(info),
        }
    }
}

/// Read `metadata.error` (or a gateway `{"message": ...}`) out of an error body.
fn parse_info(status: u16, body: &[u8]) -> ApiErrorInfo {
    let mut info = ApiErrorInfo {
        status,
        ..Default::default()
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        info.description = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return info;
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    let err = &v["metadata"]["error"];
    info.code = text(&err["code"]);
    info.description = text(&err["description"])
        .or_else(|| text(&v["message"]))
        .unwrap_or_default();
    info.attribute = text(&err["field"]["attribute"]);
    info.value = text(&err["field"]["value"]);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_validation_error() {
        let body = br#"{"metadata":{"status":"BAD_REQUEST","error":{"code":"1000","description":"Field raised validation errors","field":{"attribute":"page","value":"XX"}}}}"#;
        let e = ImednetError::from_status(400, body, None);
        let i = e.info().unwrap();
        assert_eq!(i.code.as_deref(), Some("1000"));
        assert_eq!(i.attribute.as_deref(), Some("page"));
        assert!(e.to_string().contains("\"XX\""));
        let e = ImednetError::from_status(403, br#"{"message":"Forbidden"}"#, None);
        assert!(matches!(e, ImednetError::Forbidden(ref i) if i.description == "Forbidden"));
    }
}
