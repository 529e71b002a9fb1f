//! Typed iMednet client.
//!
//! - Lists are `Stream`s of pages in order; once the first page gives `totalPages`, up to
//!   `prefetch_pages` further pages are fetched ahead on their own tasks, so a consumer
//!   never waits on a round trip, and memory stays bounded by that window. The page after the
//!   one being read is decoded on a blocking thread meanwhile; the others wait as bodies.
//! - GET is retried on network errors, 429 and 5xx with exponential backoff and jitter
//!   (`backon`), waiting at least `Retry-After` when the server sends it.
//! - POST is never retried on 5xx or timeouts (that could duplicate submissions). It is
//!   retried on 429 (the server refused it unprocessed) and on connect errors (nothing sent).
//! - At most `max_concurrency` requests are in flight per client (tokio `Semaphore`), and an
//!   optional requests-per-second pacing applies to every attempt.
//! - Keys live in [`Secret`], whose `Debug`/`Display` print `***`; they are only ever placed in
//!   sensitive request headers, never in errors or logs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

// The body type reqwest hands out (axum re-exports the same `bytes` crate type).
use axum::body::Bytes;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{Stream, TryStreamExt, stream};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};

use super::error::ImednetError;
use super::model::{
    Coding, Envelope, Form, Interval, Job, Query, Record, RecordRevision, Site, Study, Subject,
    User, Variable, Visit,
};

/// A credential that never shows itself in `Debug`/`Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The raw value, for building the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// Client settings. `ClientConfig::new(base, key, secret)` gives the defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub api_key: Secret,
    pub security_key: Secret,
    /// Whole-request timeout (connect + response + body).
    pub timeout: Duration,
    /// Concurrent requests per client.
    pub max_concurrency: usize,
    /// Optional pacing of request attempts.
    pub requests_per_second: Option<f64>,
    /// Retries after the first attempt.
    pub max_retries: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; longer answers fail as `RateLimited`.
    pub max_retry_after: Duration,
    /// Page size for lists (1..=500).
    pub page_size: usize,
    /// List pages fetched ahead of the one being consumed (0: one page at a time).
    pub prefetch_pages: usize,
}

impl ClientConfig {
    pub fn new(
        base_url: &str,
        api_key: impl Into<Secret>,
        security_key: impl Into<Secret>,
    ) -> Self {
        Self {
            base_url: base_url.to_string(),
            api_key: api_key.into(),
            security_key: security_key.into(),
            timeout: Duration::from_secs(30),
            max_concurrency: 10,
            requests_per_second: None,
            max_retries: 3,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            page_size: 500,
            prefetch_pages: 2,
        }
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// Query parameters of a list request.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// `filter` expression, e.g. `siteId==1;siteName=="My Site"` (see [`quote_value`]).
    pub filter: Option<String>,
    /// `recordDataFilter` (records only).
    pub record_data_filter: Option<String>,
    /// `prop,asc|desc`, repeatable.
    pub sort: Vec<String>,
    /// Overrides the client's page size.
    pub page_size: Option<usize>,
    /// `includeInactive` (users only).
    pub include_inactive: Option<bool>,
}

impl ListParams {
    pub fn filter(f: impl Into<String>) -> Self {
        Self {
            filter: Some(f.into()),
            ..Self::default()
        }
    }
}

/// Quote a filter value the way the SDK does: bare when `[A-Za-z0-9_.-]*`, else in double
/// quotes with `\` and `"` escaped.
pub fn quote_value(v: &str) -> String {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return v.to_string();
    }
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Strip trailing `/` and one trailing `/api`, as the SDK does.
pub fn normalize_base_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    url.strip_suffix("/api").unwrap_or(url).to_string()
}

/// Characters left bare in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

struct Inner {
    http: reqwest::Client,
    base: String,
    cfg: ClientConfig,
    permits: Semaphore,
    next_slot: Mutex<Instant>,
}

/// Cheap to clone; clones share the connection pool, concurrency limit and pacing.
#[derive(Clone)]
pub struct ImednetClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ImednetClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImednetClient")
            .field("base", &self.inner.base)
            .field("config", &self.inner.cfg)
            .finish()
    }
}

/// How a failed attempt should be handled.
enum Outcome {
    Done(Result<Bytes, ImednetError>),
    Retry(ImednetError, Option<Duration>),
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Pages of one list: requested up to `next`; the one after the page being read is decoded
/// ahead (`decoding`), the rest wait as bodies in `inflight`, in page order.
struct Pager<T> {
    next: usize,
    /// Index of the page the next step returns.
    current: usize,
    /// `totalPages` of the newest page seen.
    pages: Option<usize>,
    decoding: Option<PageTask<Envelope<T>>>,
    inflight: VecDeque<PageTask<Bytes>>,
}

impl<T: DeserializeOwned + Send + 'static> Pager<T> {
    /// Ask for pages until `window` are on their way, decoding or as bodies (one at a time
    /// until the first page tells how many there are).
    fn top_up(&mut self, window: usize, fetch: &impl Fn(usize) -> PageTask<Bytes>) {
        let (window, known) = match self.pages {
            Some(n) => (window, n),
            None => (1, 1),
        };
        while self.inflight.len() + usize::from(self.decoding.is_some()) < window
            && self.next < known
        {
            self.inflight.push_back(fetch(self.next));
            self.next += 1;
        }
    }

    /// Start decoding the next page on a blocking thread, so it overlaps with the consumer
    /// reading the current one (decoding is most of a list's CPU time).
    fn decode_next(&mut self) {
        if self.decoding.is_none()
            && let Some(body) = self.inflight.pop_front()
        {
            self.decoding = Some(PageTask(tokio::spawn(async move {
                let bytes = body.join().await?;
                let decoded = tokio::task::spawn_blocking(move || decode::<Envelope<T>>(&bytes));
                PageTask(decoded).join().await
            })));
        }
    }
}

/// Work for one page on its own task; dropping it aborts the task (the list was dropped or
/// ended early), so no request outlives its stream.
struct PageTask<R>(tokio::task::JoinHandle<Result<R, ImednetError>>);

impl<R> PageTask<R> {
    async fn join(mut self) -> Result<R, ImednetError> {
        match (&mut self.0).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(ImednetError::Network {
                message: format!("page request ended early: {e}"),
                timeout: false,
            }),
        }
    }
}

impl<R> Drop for PageTask<R> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ImednetClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, ImednetError> {
        let base = normalize_base_url(&cfg.base_url);
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ImednetError::Invalid(format!(
                "base URL must start with http:// or https:// (got {base:?})"
            )));
        }
        if cfg.api_key.expose().is_empty() || cfg.security_key.expose().is_empty() {
            return Err(ImednetError::Invalid(
                "api key and security key are required".into(),
            ));
        }
        if !(1..=500).contains(&cfg.page_size) {
            return Err(ImednetError::Invalid("page size must be 1..=500".into()));
        }
        let mut headers = HeaderMap::new();
        for (name, secret) in [
            ("x-api-key", &cfg.api_key),
            ("x-imn-security-key", &cfg.security_key),
        ] {
            let mut v = HeaderValue::from_str(secret.expose())
                .map_err(|_| ImednetError::Invalid(format!("{name} has invalid characters")))?;
            v.set_sensitive(true);
            headers.insert(name, v);
        }
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| ImednetError::Invalid(format!("http client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                permits: Semaphore::new(cfg.max_concurrency.max(1)),
                next_slot: Mutex::new(Instant::now()),
                cfg,
            }),
        })
    }

    /// Normalised base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    fn url(&self, study: Option<&str>, rest: &[&str]) -> String {
        let mut u = format!("{}/api/v1/edc/studies", self.inner.base);
        for s in study.into_iter().chain(rest.iter().copied()) {
            u.push('/');
            u.push_str(&seg(s));
        }
        u
    }

    async fn pace(&self) {
        let Some(rps) = self.inner.cfg.requests_per_second.filter(|r| *r > 0.0) else {
            return;
        };
        let slot = {
            let mut next = self.inner.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + Duration::from_secs_f64(1.0 / rps);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        query: &[(String, String)],
        body: Option<&Value>,
        headers: &HeaderMap,
    ) -> Outcome {
        let is_get = *method == Method::GET;
        let _permit = self.inner.permits.acquire().await;
        self.pace().await;
        let mut req = self
            .inner
            .http
            .request(method.clone(), url)
            .query(query)
            .headers(headers.clone());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let connect = e.is_connect();
                let err = network(e);
                // A POST may be retried only when it certainly never left.
                return if is_get || connect {
                    Outcome::Retry(err, None)
                } else {
                    Outcome::Done(Err(err))
                };
            }
        };
        let status = resp.status();
        let wait = retry_after(resp.headers());
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let err = network(e);
                return if is_get {
                    Outcome::Retry(err, None)
                } else {
                    Outcome::Done(Err(err))
                };
            }
        };
        if status.is_success() {
            return Outcome::Done(Ok(bytes));
        }
        let err = ImednetError::from_status(status.as_u16(), &bytes, wait);
        if status == StatusCode::TOO_MANY_REQUESTS || (is_get && status.is_server_error()) {
            Outcome::Retry(err, wait)
        } else {
            Outcome::Done(Err(err))
        }
    }

    /// Send with the retry policy; returns the success body.
    async fn send(
        &self,
        method: Method,
        url: &str,
        query: &[(String, String)],
        body: Option<&Value>,
        headers: HeaderMap,
    ) -> Result<Bytes, ImednetError> {
        let cfg = &self.inner.cfg;
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(cfg.min_backoff)
            .with_max_delay(cfg.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(cfg.max_retries)
            .build();
        let mut attempt = 1;
        loop {
            match self.attempt(&method, url, query, body, &headers).await {
                Outcome::Done(r) => return r,
                Outcome::Retry(err, retry_after) => {
                    let Some(delay) = backoff.next() else {
                        return Err(err);
                    };
                    let delay = match retry_after {
                        Some(ra) if ra > cfg.max_retry_after => return Err(err),
                        Some(ra) => ra.max(delay.min(ra + cfg.min_backoff)),
                        None => delay,
                    };
                    tracing::debug!(%method, path = %strip_base(url, &self.inner.base), attempt, ?delay, error = %err, "retrying iMednet request");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        query: &[(String, String)],
    ) -> Result<T, ImednetError> {
        let bytes = self
            .send(Method::GET, url, query, None, HeaderMap::new())
            .await?;
        decode(&bytes)
    }

    /// Stream every item of a list endpoint, page by page.
    /// `study` = `None` lists studies; `endpoint` is the path segment (`records`, …).
    pub fn list<T>(
        &self,
        study: Option<&str>,
        endpoint: &str,
        params: ListParams,
    ) -> impl Stream<Item = Result<T, ImednetError>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        let url = match study {
            Some(s) => self.url(Some(s), &[endpoint]),
            None => self.url(None, &[]),
        };
        let size = params
            .page_size
            .unwrap_or(self.inner.cfg.page_size)
            .clamp(1, 500);
        let mut base_query: Vec<(String, String)> = Vec::new();
        if let Some(f) = params.filter {
            base_query.push(("filter".into(), f));
        }
        if let Some(f) = params.record_data_filter {
            base_query.push(("recordDataFilter".into(), f));
        }
        for s in params.sort {
            base_query.push(("sort".into(), s));
        }
        if let Some(b) = params.include_inactive {
            base_query.push(("includeInactive".into(), b.to_string()));
        }
        let client = self.clone();
        let ahead = self.inner.cfg.prefetch_pages;
        let fetch = move |page: usize| {
            let (client, url) = (client.clone(), url.clone());
            let mut q = base_query.clone();
            q.push(("page".into(), page.to_string()));
            q.push(("size".into(), size.to_string()));
            // Its own task, so the request goes on while the consumer is busy. Bodies wait
            // undecoded: a page of records takes several times its JSON size once decoded.
            PageTask::<Bytes>(tokio::spawn(async move {
                client
                    .send(Method::GET, &url, &q, None, HeaderMap::new())
                    .await
            }))
        };
        let first = Pager::<T> {
            next: 0,
            current: 0,
            pages: None,
            decoding: None,
            inflight: VecDeque::new(),
        };
        stream::try_unfold(Some(first), move |pager| {
            let fetch = fetch.clone();
            async move {
                let Some(mut p) = pager else {
                    return Ok(None);
                };
                // This page and `ahead` more.
                p.top_up(1 + ahead, &fetch);
                let env: Envelope<T> = if let Some(decoding) = p.decoding.take() {
                    decoding.join().await?
                } else if let Some(body) = p.inflight.pop_front() {
                    decode(&body.join().await?)?
                } else {
                    return Ok(None);
                };
                let page = p.current;
                p.current += 1;
                let total_pages = env
                    .pagination
                    .as_ref()
                    .and_then(|p| p.total_pages)
                    .unwrap_or(0);
                // The newest count wins (the study may change while it is read); pages asked
                // for beyond it are dropped, which aborts them.
                let more = !env.data.is_empty() && (page as i64) < total_pages - 1;
                p.pages = Some(usize::try_from(total_pages).unwrap_or(0));
                if more {
                    // The consumer now holds this page: keep `ahead` more coming.
                    p.top_up(ahead, &fetch);
                    p.decode_next();
                }
                Ok(Some((env.data, more.then_some(p))))
            }
        })
        .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
        .try_flatten()
    }

    pub fn studies(&self, p: ListParams) -> impl Stream<Item = Result<Study, ImednetError>> {
        self.list(None, "", p)
    }
    pub fn sites(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<Site, ImednetError>> {
        self.list(Some(study), "sites", p)
    }
    pub fn subjects(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<Subject, ImednetError>> {
        self.list(Some(study), "subjects", p)
    }
    pub fn records(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<Record, ImednetError>> {
        self.list(Some(study), "records", p)
    }
    pub fn record_revisions(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<RecordRevision, ImednetError>> {
        self.list(Some(study), "recordRevisions", p)
    }
    pub fn forms(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<Form, ImednetError>> {
        self.list(Some(study), "forms", p)
    }
    pub fn intervals(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<Interval, ImednetError>> {
        self.list(Some(study), "intervals", p)
    }
    pub fn variables(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<Variable, ImednetError>> {
        self.list(Some(study), "variables", p)
    }
    pub fn queries(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<Query, ImednetError>> {
        self.list(Some(study), "queries", p)
    }
    pub fn codings(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<Coding, ImednetError>> {
        self.list(Some(study), "codings", p)
    }
    pub fn users(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<User, ImednetError>> {
        self.list(Some(study), "users", p)
    }
    pub fn visits(
        &self,
        study: &str,
        p: ListParams,
    ) -> impl Stream<Item = Result<Visit, ImednetError>> {
        self.list(Some(study), "visits", p)
    }

    /// `GET /studies/{s}/jobs/{batchId}` (a bare object).
    pub async fn job(&self, study: &str, batch_id: &str) -> Result<Job, ImednetError> {
        self.get_json(&self.url(Some(study), &["jobs", batch_id]), &[])
            .await
    }

    /// `GET /studies/{s}/jobs` (a bare array; not documented upstream).
    pub async fn jobs(&self, study: &str) -> Result<Vec<Job>, ImednetError> {
        self.get_json(&self.url(Some(study), &["jobs"]), &[]).await
    }

    /// `POST /studies/{s}/records`. Never retried on 5xx or timeout.
    pub async fn create_records(
        &self,
        study: &str,
        records: &[Value],
        email_notify: Option<&str>,
    ) -> Result<Job, ImednetError> {
        let mut headers = HeaderMap::new();
        if let Some(n) = email_notify {
            if n.contains(['\r', '\n']) {
                return Err(ImednetError::Invalid(
                    "x-email-notify must not contain CR or LF".into(),
                ));
            }
            let v = HeaderValue::from_str(n)
                .map_err(|_| ImednetError::Invalid("invalid x-email-notify".into()))?;
            headers.insert("x-email-notify", v);
        }
        let body = Value::Array(records.to_vec());
        let bytes = self
            .send(
                Method::POST,
                &self.url(Some(study), &["records"]),
                &[],
                Some(&body),
                headers,
            )
            .await?;
        decode(&bytes)
    }

    /// Poll a job until it is terminal. Failed/cancelled → `JobFailed`.
    pub async fn poll_job(
        &self,
        study: &str,
        batch_id: &str,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Job, ImednetError> {
        let start = Instant::now();
        loop {
            let job = self.job(study, batch_id).await?;
            if job.is_successful() {
                return Ok(job);
            }
            if job.is_failed() {
                return Err(ImednetError::JobFailed {
                    batch_id: batch_id.to_string(),
                    state: job.state,
                });
            }
            if start.elapsed() >= timeout {
                return Err(ImednetError::JobTimeout {
                    batch_id: batch_id.to_string(),
                    state: job.state,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Collect a stream (small collections only: metadata, tests).
    pub async fn collect<T>(
        s: impl Stream<Item = Result<T, ImednetError>>,
    ) -> Result<Vec<T>, ImednetError> {
        s.try_collect().await
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ImednetError> {
    serde_json::from_slice(bytes).map_err(|e| ImednetError::Decode(e.to_string()))
}

/// Network error without the URL (it could carry query values) and without headers.
fn network(e: reqwest::Error) -> ImednetError {
    let timeout = e.is_timeout();
    ImednetError::Network {
        message: e.without_url().to_string(),
        timeout,
    }
}

fn strip_base<'a>(url: &'a str, base: &str) -> &'a str {
    url.strip_prefix(base).unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_encodes() {
        assert_eq!(normalize_base_url("http://h:1/sim/api/"), "http://h:1/sim");
        assert_eq!(normalize_base_url("http://h/api/api"), "http://h/api");
        assert_eq!(normalize_base_url("http://h/"), "http://h");
        assert_eq!(seg("CV 3/B"), "CV%203%2FB");
        assert_eq!(quote_value("a_b-1.2"), "a_b-1.2");
        assert_eq!(quote_value(r#"My "x" \ y"#), r#""My \"x\" \\ y""#);
    }

    #[test]
    fn secrets_never_print() {
        let cfg = ClientConfig::new("http://h", "key-123", "sec-456");
        let c = ImednetClient::new(cfg).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("key-123") && !dbg.contains("sec-456"));
        assert!(dbg.contains("***"));
    }
}
