//! Refuses state-changing requests that a browser sent on behalf of another site.
//!
//! Browsers label every request with `Sec-Fetch-Site`, and older ones at least send `Origin` on
//! POST; a request with neither header comes from a non-browser client, which cannot carry a
//! victim's cookies. Together with `SameSite=Lax` cookies this stops cross-site request forgery
//! without tokens in every form.
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn refuse_cross_site(req: Request<Body>, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    match verdict(&req) {
        Ok(()) => next.run(req).await,
        Err(why) => {
            tracing::warn!(path = %req.uri().path(), %why, "cross-site request refused");
            let body = app::error::AppError::Request(format!("cross-site request refused: {why}"));
            (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_string(&body).unwrap_or_default(),
            )
                .into_response()
        }
    }
}

fn verdict(req: &Request<Body>) -> Result<(), String> {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return match site {
            "same-origin" | "none" => Ok(()),
            other => Err(format!("the browser marked it {other}")),
        };
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(format!("Origin {origin} does not match this server"))
    }
}

#[cfg(test)]
mod tests {
    use super::verdict;
    use axum::body::Body;
    use axum::http::Request;

    fn req(headers: &[(&str, &str)]) -> Request<Body> {
        let mut b = Request::post("/api/admin/create_user").header("host", "127.0.0.1:3000");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).expect("request")
    }

    #[test]
    fn same_origin_passes_cross_site_fails() {
        assert!(verdict(&req(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(verdict(&req(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(verdict(&req(&[("origin", "http://127.0.0.1:3000")])).is_ok());
        assert!(verdict(&req(&[("origin", "http://evil.example")])).is_err());
        assert!(verdict(&req(&[("origin", "null")])).is_err());
        assert!(verdict(&req(&[])).is_ok());
    }
}
