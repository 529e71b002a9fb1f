//! Sign-in, sign-out, and the middleware that resolves the user of every request and enforces
//! the role of each server function's URL (see `app::api`).
use super::{Access, HttpState, SESSION_COOKIE};
use crate::bootstrap::normalize_username;
use crate::passwords;
use crate::store::throttle::ThrottlePolicy;
use app::error::AppError;
use app::model::{AuthContext, CurrentUser, Role};
use axum::Form;
use axum::body::Body;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{Method, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tower_sessions::Session;

/// What the session stores: who signed in, and the account's epoch at that moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionUser {
    id: i64,
    epoch: i64,
}

const SESSION_KEY: &str = "user";

/// Resolves the signed-in user, then gates server functions by role and pages by sign-in.
pub async fn authenticate(
    State(state): State<HttpState>,
    session: Session,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    if is_static(&path) {
        return next.run(req).await;
    }
    let had_cookie = has_session_cookie(&req);
    let user = match resolve_user(&state, &session).await {
        Ok(user) => user,
        Err(resp) => return resp,
    };
    let ctx = AuthContext {
        session_expired: had_cookie && user.is_none(),
        user,
    };
    req.extensions_mut().insert(ctx.clone());

    if let Some(rest) = path.strip_prefix("/api/") {
        if !path.starts_with(app::api::PUBLIC_PREFIX)
            && let Err(err) = gate_server_fn(rest, &ctx)
        {
            return error_response(err);
        }
        return with_error_status(next.run(req).await).await;
    } else if is_page(&path) && req.method() == Method::GET && ctx.user.is_none() {
        let reason = if ctx.session_expired {
            "expired"
        } else {
            "required"
        };
        let next_url = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let target = format!("/login?reason={reason}&next={}", urlencode(next_url));
        return Redirect::to(&target).into_response();
    }
    next.run(req).await
}

/// Loads the session's user and checks the account is still enabled and unchanged.
async fn resolve_user(
    state: &HttpState,
    session: &Session,
) -> Result<Option<CurrentUser>, Response> {
    let stored = match session.get::<SessionUser>(SESSION_KEY).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable session; treating as signed out");
            None
        }
    };
    let Some(stored) = stored else {
        return Ok(None);
    };
    let row = state.db.user_by_id(stored.id).await.map_err(|e| {
        tracing::error!(error = %e, "user lookup failed");
        error_response(AppError::Internal("session lookup".into()))
    })?;
    match row {
        Some(u) if !u.disabled && u.session_epoch == stored.epoch => Ok(Some(CurrentUser {
            id: u.id,
            role: u.role(),
            username: u.username,
        })),
        // Disabled, password reset or role changed since sign-in: the session is over.
        _ => {
            let _ = session.flush().await;
            Ok(None)
        }
    }
}

/// `/api/<role>/<name>`: the least role that may call the function.
fn gate_server_fn(rest: &str, ctx: &AuthContext) -> Result<(), AppError> {
    let segment = rest.split('/').next().unwrap_or("");
    // An unclassified function is refused outright: no server function escapes the convention.
    let needed: Role = segment
        .parse()
        .map_err(|_| AppError::NotFound(format!("API {segment}")))?;
    check_role(needed, ctx)
}

/// The route layer of every plain route (see [`super::plain_routes`]): its declared access,
/// answered in plain text (these are downloads and event streams, not JSON calls).
pub async fn require_access(access: Access, req: Request<Body>, next: Next) -> Response {
    if let Access::AtLeast(needed) = access {
        let ctx = req
            .extensions()
            .get::<AuthContext>()
            .cloned()
            .unwrap_or_default();
        if let Err(err) = check_role(needed, &ctx) {
            let status =
                StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, err.to_string()).into_response();
        }
    }
    next.run(req).await
}

fn check_role(needed: Role, ctx: &AuthContext) -> Result<(), AppError> {
    match &ctx.user {
        Some(u) if u.role.allows(needed) => Ok(()),
        Some(u) => Err(AppError::Forbidden {
            needed,
            actual: u.role,
        }),
        None if ctx.session_expired => Err(AppError::SessionExpired),
        None => Err(AppError::Unauthenticated),
    }
}

/// The same body a server function would answer with, so the browser shows the message.
fn error_response(err: AppError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&err).unwrap_or_default(),
    )
        .into_response()
}

/// Server functions answer every error with 500, including ones raised before the function body
/// runs (a malformed argument). Give each error the status its variant names.
async fn with_error_status(res: Response) -> Response {
    if res.status() != StatusCode::INTERNAL_SERVER_ERROR
        || !res.headers().contains_key("serverfnerror")
    {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return error_response(AppError::Internal("unreadable error".into()));
    };
    if let Ok(err) = serde_json::from_slice::<AppError>(&bytes) {
        parts.status =
            StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn is_static(path: &str) -> bool {
    path.starts_with("/pkg/") || path == "/healthz" || path == "/favicon.ico"
}

/// Paths rendered by the app that need a signed-in user.
fn is_page(path: &str) -> bool {
    let exempt = path == "/login"
        || path.starts_with("/auth/")
        || path.starts_with("/sim/")
        // Event streams answer 401 themselves; a redirect would make EventSource retry a page.
        || path.starts_with("/events/");
    let is_file = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'));
    !exempt && !is_file
}

fn has_session_cookie(req: &Request<Body>) -> bool {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(';')
                .any(|c| c.trim().starts_with(&format!("{SESSION_COOKIE}=")))
        })
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// Only same-site paths: an absolute or protocol-relative `next` would be an open redirect.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") => n,
        _ => "/",
    }
}

fn login_redirect(error: &str, username: &str, next: &str, retry_ms: Option<i64>) -> Response {
    let mut target = format!(
        "/login?error={error}&username={}&next={}",
        urlencode(username),
        urlencode(next)
    );
    if let Some(ms) = retry_ms {
        target.push_str(&format!("&retry={}", (ms + 999) / 1000));
    }
    Redirect::to(&target).into_response()
}

pub async fn login(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return Redirect::to("/login?error=malformed").into_response();
    };
    let next = safe_next(form.next.as_deref()).to_string();
    let Ok(username) = normalize_username(&form.username) else {
        return login_redirect("invalid", "", &next, None);
    };
    match try_login(&state, &session, peer, &username, form.password).await {
        Ok(()) => Redirect::to(&next).into_response(),
        Err(LoginFailure::Throttled(ms)) => login_redirect("throttled", &username, &next, Some(ms)),
        Err(LoginFailure::Invalid) => login_redirect("invalid", &username, &next, None),
        Err(LoginFailure::Disabled) => login_redirect("disabled", &username, &next, None),
        Err(LoginFailure::Internal(e)) => {
            tracing::error!(error = %e, "sign-in failed");
            login_redirect("internal", &username, &next, None)
        }
    }
}

enum LoginFailure {
    Throttled(i64),
    Invalid,
    Disabled,
    Internal(String),
}

impl From<crate::store::StoreError> for LoginFailure {
    fn from(e: crate::store::StoreError) -> Self {
        LoginFailure::Internal(e.to_string())
    }
}

async fn try_login(
    state: &HttpState,
    session: &Session,
    peer: SocketAddr,
    username: &str,
    password: String,
) -> Result<(), LoginFailure> {
    let account_key = format!("user:{username}");
    let address_key = format!("ip:{}", peer.ip());
    let wait = state
        .db
        .throttle_wait_ms(&account_key)
        .await?
        .max(state.db.throttle_wait_ms(&address_key).await?);
    if wait > 0 {
        return Err(LoginFailure::Throttled(wait));
    }
    let user = state.db.user_by_name(username).await?;
    let ok = passwords::verify(password, user.as_ref().map(|u| u.password_hash.clone())).await;
    let user = match user {
        Some(u) if ok => u,
        _ => {
            let a = state
                .db
                .throttle_record_failure(&account_key, ThrottlePolicy::ACCOUNT)
                .await?;
            let b = state
                .db
                .throttle_record_failure(&address_key, ThrottlePolicy::ADDRESS)
                .await?;
            tracing::info!(%username, address = %peer.ip(), "failed sign-in");
            return Err(match a.max(b) {
                0 => LoginFailure::Invalid,
                lock => LoginFailure::Throttled(lock),
            });
        }
    };
    if user.disabled {
        return Err(LoginFailure::Disabled);
    }
    state.db.throttle_clear(&account_key).await?;
    // A fresh id at sign-in defeats session fixation.
    session
        .cycle_id()
        .await
        .map_err(|e| LoginFailure::Internal(e.to_string()))?;
    session
        .insert(
            SESSION_KEY,
            SessionUser {
                id: user.id,
                epoch: user.session_epoch,
            },
        )
        .await
        .map_err(|e| LoginFailure::Internal(e.to_string()))?;
    state
        .db
        .audit(
            &user.username,
            "session.login",
            &user.username,
            serde_json::json!({"address": peer.ip().to_string()}),
        )
        .await?;
    tracing::info!(username = %user.username, "signed in");
    Ok(())
}

pub async fn logout(session: Session) -> Response {
    if let Err(e) = session.flush().await {
        tracing::warn!(error = %e, "session flush failed at sign-out");
    }
    Redirect::to("/login?reason=signed_out").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(safe_next(Some("/runs?x=1")), "/runs?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn server_fn_roles_come_from_the_url() {
        let viewer = AuthContext {
            user: Some(CurrentUser {
                id: 1,
                username: "v".into(),
                role: Role::Viewer,
            }),
            session_expired: false,
        };
        assert!(gate_server_fn("viewer/system_health", &viewer).is_ok());
        assert_eq!(
            gate_server_fn("admin/create_user", &viewer),
            Err(AppError::Forbidden {
                needed: Role::Admin,
                actual: Role::Viewer
            })
        );
        assert_eq!(
            gate_server_fn("admin/create_user", &AuthContext::default()),
            Err(AppError::Unauthenticated)
        );
        assert!(matches!(
            gate_server_fn("misc/thing", &viewer),
            Err(AppError::NotFound(_))
        ));
    }
}
