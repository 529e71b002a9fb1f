//! The iMednet simulator: an axum router serving `/api/v1/edc/...` from generated data.
//!
//! Choices where the real API is unspecified:
//! - `size` must be 1..=500; anything else answers **400** (code 1000, `field.attribute = "size"`)
//!   rather than clamping, so a client that asks for too much finds out.
//! - An unknown study answers **404** (code 9000) with the error envelope; 403 stays reserved
//!   for bad keys (`{"message":"Forbidden"}`), so clients can tell the two apart.
//! - `POST /records` answers **202** `{jobId, batchId, state:"created"}`; the job reports
//!   `created` until `job_running_after`, `running` until `job_done_after`, then `completed`
//!   (or `failed` when any item was invalid — then no item is applied).
//! - Jobs list `GET /studies/{s}/jobs` answers a bare JSON array (what SDK 0.5.0 expects).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::client::Secret;
use super::faults::{FaultKind, Faults};
use super::filter::{self, Access, AttrType, Bound, Dialect, FilterError};
use super::generator::{Profile, StudyData};
use super::model::{fmt_timestamp, now_secs};

/// The keys the simulator accepts by default (public: they guard nothing real).
pub const DEMO_API_KEY: &str = "demo-api-key";
pub const DEMO_SECURITY_KEY: &str = "demo-security-key";

/// Simulator start-up configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub profile: Profile,
    /// Accepted `(x-api-key, x-imn-security-key)` pairs (Debug prints `***`).
    pub keys: Vec<(Secret, Secret)>,
    pub job_running_after: Duration,
    pub job_done_after: Duration,
    pub faults: Faults,
    /// Serve user-role dates as `[y,m,d,h,mi,s,ns]` arrays (documented form; breaks SDK 0.5.0).
    pub role_dates_as_arrays: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            profile: Profile::demo(),
            keys: vec![(DEMO_API_KEY.into(), DEMO_SECURITY_KEY.into())],
            job_running_after: Duration::from_millis(100),
            job_done_after: Duration::from_millis(400),
            faults: Faults::default(),
            role_dates_as_arrays: false,
        }
    }
}

/// Requests seen by the simulator (counted before faults apply).
#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    posts: AtomicU64,
    posts_by_study: Mutex<HashMap<String, u64>>,
}

#[derive(Debug)]
struct Job {
    job_id: String,
    batch_id: String,
    created: Instant,
    created_ts: i64,
    /// Validated items, or the reason the job fails.
    plan: Result<Vec<Planned>, String>,
    applied: bool,
}

/// A validated record submission.
#[derive(Debug, Clone)]
struct Planned {
    form: usize,
    target: Target,
    interval: Option<usize>,
    data: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone)]
enum Target {
    /// Register a new subject at this site.
    Register { site: usize },
    /// New or updated record of an existing subject (index into the subject collection).
    Subject(usize),
    /// SITE-form record.
    Site(usize),
    /// Update of an existing record (index into the record collection).
    Record(usize),
}

/// Mutations on top of the generated data.
#[derive(Debug, Default)]
struct Posted {
    records: Vec<Value>,
    overrides: HashMap<usize, Value>,
    revisions: Vec<Value>,
    subjects: Vec<Value>,
}

/// The items of one list page.
enum Items {
    Values(Vec<Value>),
    /// Already encoded: a JSON array.
    Json(Vec<u8>),
}

#[derive(Debug)]
struct Study {
    data: StudyData,
    posted: RwLock<Posted>,
    jobs: Mutex<Vec<Job>>,
}

#[derive(Debug)]
struct Inner {
    studies: Vec<Study>,
    by_key: HashMap<String, usize>,
    keys: Vec<(Secret, Secret)>,
    running_after: Duration,
    done_after: Duration,
    faults: Mutex<Faults>,
    stats: Stats,
    seed: u64,
    counter: AtomicU64,
    rate: Mutex<HashMap<String, (Instant, u32)>>,
}

/// Shared simulator state; cheap to clone.
#[derive(Debug, Clone)]
pub struct SimState(Arc<Inner>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl SimState {
    /// Generate the data (fixed parts only; large collections are computed on demand).
    pub fn new(config: SimConfig) -> Self {
        let studies: Vec<Study> = config
            .profile
            .studies
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Study {
                data: StudyData::new(config.seed, i, spec, config.role_dates_as_arrays),
                posted: RwLock::default(),
                jobs: Mutex::default(),
            })
            .collect();
        let by_key = studies
            .iter()
            .enumerate()
            .map(|(i, s)| (s.data.spec.key.clone(), i))
            .collect();
        Self(Arc::new(Inner {
            studies,
            by_key,
            keys: config.keys,
            running_after: config.job_running_after,
            done_after: config.job_done_after,
            faults: Mutex::new(config.faults),
            stats: Stats::default(),
            seed: config.seed,
            counter: AtomicU64::new(0),
            rate: Mutex::default(),
        }))
    }

    /// Replace the fault settings.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.0.faults) = faults;
    }

    /// Current fault settings (rules show their remaining counts).
    pub fn faults(&self) -> Faults {
        lock(&self.0.faults).clone()
    }

    /// POST requests received for a study (counted before any fault applies).
    pub fn post_count(&self, study: &str) -> u64 {
        lock(&self.0.stats.posts_by_study)
            .get(study)
            .copied()
            .unwrap_or(0)
    }

    /// All API requests received.
    pub fn request_count(&self) -> u64 {
        self.0.stats.requests.load(Ordering::Relaxed)
    }

    /// Study keys served.
    pub fn study_keys(&self) -> Vec<String> {
        self.0
            .studies
            .iter()
            .map(|s| s.data.spec.key.clone())
            .collect()
    }

    fn next_id(&self) -> String {
        let n = self.0.counter.fetch_add(1, Ordering::Relaxed);
        let h = mix(self.0.seed ^ 0xB47C_u64 ^ n.wrapping_mul(0x9E37_79B9));
        let h2 = mix(h);
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            h >> 32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            h2 & 0xfff,
            (h2 >> 16) & 0xffff_ffff_ffff
        )
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The simulator router: `/api/v1/edc/...` plus the control endpoints `/__sim/faults`
/// (GET/PUT/DELETE) and `/__sim/stats` (GET). Nest it anywhere; clients then use the nest
/// prefix as base URL.
pub fn router(state: SimState) -> Router {
    let api = Router::new()
        .route("/api/v1/edc/studies", get(list_studies))
        .route(
            "/api/v1/edc/studies/{study}/{endpoint}",
            get(list_study_endpoint).post(post_records),
        )
        .route("/api/v1/edc/studies/{study}/jobs/{batch}", get(get_job))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), gate));
    // The control endpoints take the same keys as the API (so a demo simulator mounted in the
    // app cannot be reconfigured by strangers) but no faults (so faults can always be cleared).
    let control = Router::new()
        .route(
            "/__sim/faults",
            get(get_faults).put(put_faults).delete(delete_faults),
        )
        .route("/__sim/stats", get(get_stats))
        .layer(middleware::from_fn_with_state(state.clone(), require_keys));
    control.merge(api).with_state(state)
}

/// A 1-based identifier among `count` items → its 0-based index, or the message naming it.
fn one_based(id: usize, count: usize, what: &str) -> Result<usize, String> {
    if (1..=count).contains(&id) {
        Ok(id - 1)
    } else {
        Err(format!("unknown {what} {id}"))
    }
}

async fn require_keys(State(state): State<SimState>, req: Request, next: Next) -> Response {
    if has_valid_keys(&state, req.headers()) {
        next.run(req).await
    } else {
        forbidden()
    }
}

fn has_valid_keys(state: &SimState, headers: &HeaderMap) -> bool {
    let api_key = header_str(headers, "x-api-key").unwrap_or("");
    let sec_key = header_str(headers, "x-imn-security-key").unwrap_or("");
    state
        .0
        .keys
        .iter()
        .any(|(a, s)| a.expose() == api_key && s.expose() == sec_key)
}

// ---------------------------------------------------------------------------
// Errors and envelopes.

#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    description: String,
    field: Option<(String, String)>,
}

impl ApiError {
    fn validation(attr: &str, value: &str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "1000",
            description: description.into(),
            field: Some((attr.to_string(), value.to_string())),
        }
    }
    fn not_found(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "9000",
            description: description.into(),
            field: None,
        }
    }
    fn respond(self, method: &Method, path: &str) -> Response {
        let status_text = self
            .status
            .canonical_reason()
            .unwrap_or("ERROR")
            .to_ascii_uppercase()
            .replace(' ', "_");
        let mut error = json!({"code": self.code, "description": self.description});
        if let Some((a, v)) = self.field {
            error["field"] = json!({"attribute": a, "value": v});
        }
        let body = json!({"metadata": {
            "status": status_text, "method": method.as_str(), "path": path,
            "timestamp": fmt_timestamp(now_secs()), "error": error,
        }});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> Self {
        Self::validation(
            &e.attribute,
            &e.value,
            format!("Field raised validation errors: {}", e.message),
        )
    }
}

fn ok_metadata(method: &Method, path: &str) -> Value {
    json!({"status": "OK", "method": method.as_str(), "path": path,
           "timestamp": fmt_timestamp(now_secs()), "error": {}})
}

fn envelope(method: &Method, path: &str, pagination: Option<Value>, data: Vec<Value>) -> Value {
    let mut v = json!({"metadata": ok_metadata(method, path), "data": data});
    if let Some(p) = pagination {
        v["pagination"] = p;
    }
    v
}

/// A list page whose items were encoded already: `data` is the JSON array. Keys in the
/// order `envelope` serialises them (sorted).
fn envelope_response(method: &Method, path: &str, pagination: &Value, data: &[u8]) -> Response {
    let mut body = Vec::with_capacity(data.len() + 512);
    body.extend_from_slice(b"{\"data\":");
    body.extend_from_slice(data);
    body.extend_from_slice(b",\"metadata\":");
    // Serialising a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, &ok_metadata(method, path));
    body.extend_from_slice(b",\"pagination\":");
    let _ = serde_json::to_writer(&mut body, pagination);
    body.push(b'}');
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!("No such resource: {}", uri.path())).respond(&method, uri.path())
}

// ---------------------------------------------------------------------------
// Gate: auth, request accounting and fault injection for every API request.

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"message": "Forbidden"})),
    )
        .into_response()
}

fn too_many(retry_after: u64) -> Response {
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"metadata": {"status": "TOO_MANY_REQUESTS",
            "timestamp": fmt_timestamp(now_secs()),
            "error": {"code": "9000", "description": "Rate limit exceeded"}}})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

fn fault_status(status: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return too_many(retry_after.unwrap_or(1));
    }
    let mut r = (
        status,
        axum::Json(json!({"metadata": {"status": status.canonical_reason().unwrap_or("ERROR").to_ascii_uppercase().replace(' ', "_"),
            "timestamp": fmt_timestamp(now_secs()),
            "error": {"code": "9000", "description": "Injected fault"}}})),
    )
        .into_response();
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// (study, endpoint) addressed by an API path (already stripped of any nest prefix).
fn route_of(path: &str) -> (Option<String>, String) {
    let rest = path
        .find("/api/v1/edc/studies")
        .map(|i| &path[i + "/api/v1/edc/studies".len()..])
        .unwrap_or("");
    let mut segs = rest.split('/').filter(|s| !s.is_empty());
    let study = segs.next().map(|s| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    });
    let endpoint = segs.next().unwrap_or("studies").to_string();
    (study, endpoint)
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn gate(State(state): State<SimState>, req: Request, next: Next) -> Response {
    let inner = &state.0;
    let method = req.method().clone();
    let (study, endpoint) = route_of(req.uri().path());
    inner.stats.requests.fetch_add(1, Ordering::Relaxed);
    if method == Method::POST {
        inner.stats.posts.fetch_add(1, Ordering::Relaxed);
        *lock(&inner.stats.posts_by_study)
            .entry(study.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let api_key = header_str(req.headers(), "x-api-key")
        .unwrap_or("")
        .to_string();
    if !has_valid_keys(&state, req.headers()) {
        return forbidden();
    }

    let (latency, rule, share, share_status, rps) = {
        let mut f = lock(&inner.faults);
        let rule = f.take_rule(study.as_deref(), &endpoint, method.as_str());
        (
            f.latency_ms,
            rule,
            f.error_share,
            f.error_status.unwrap_or(500),
            f.rate_limit_rps,
        )
    };
    let mut delay = latency;
    if let Some(FaultKind::Latency { ms }) = rule {
        delay += ms;
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    match rule {
        Some(FaultKind::Status {
            status,
            retry_after_secs,
        }) => return fault_status(status, retry_after_secs),
        Some(FaultKind::Stall { ms }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        _ => {}
    }
    if share > 0.0 {
        let n = inner.counter.fetch_add(1, Ordering::Relaxed);
        let roll = (mix(inner.seed ^ 0xFA17 ^ n) % 1_000_000) as f64 / 1_000_000.0;
        if roll < share {
            return fault_status(share_status, None);
        }
    }
    if let Some(rps) = rps {
        let mut rate = lock(&inner.rate);
        let now = Instant::now();
        let slot = rate.entry(api_key).or_insert((now, 0));
        if now.duration_since(slot.0) >= Duration::from_secs(1) {
            *slot = (now, 0);
        }
        if slot.1 >= rps {
            let left = Duration::from_secs(1).saturating_sub(now.duration_since(slot.0));
            return too_many(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        slot.1 += 1;
    }

    let resp = next.run(req).await;
    match rule {
        Some(FaultKind::Malformed) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"metadata\": {\"status\": \"OK\"}, \"data\": [{\"recordId\": 1,,}",
        )
            .into_response(),
        Some(FaultKind::Truncated) => {
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let cut = bytes.slice(..bytes.len() / 2);
            parts.status = StatusCode::OK;
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(cut))
        }
        _ => resp,
    }
}

async fn get_faults(State(state): State<SimState>) -> axum::Json<Faults> {
    axum::Json(state.faults())
}

async fn put_faults(State(state): State<SimState>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            state.set_faults(f.clone());
            axum::Json(f).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"message": format!("invalid faults: {e}")})),
        )
            .into_response(),
    }
}

async fn delete_faults(State(state): State<SimState>) -> StatusCode {
    state.set_faults(Faults::default());
    StatusCode::NO_CONTENT
}

async fn get_stats(State(state): State<SimState>) -> axum::Json<Value> {
    let s = &state.0.stats;
    axum::Json(json!({
        "requests": s.requests.load(Ordering::Relaxed),
        "posts": s.posts.load(Ordering::Relaxed),
        "postsByStudy": *lock(&s.posts_by_study),
    }))
}

// ---------------------------------------------------------------------------
// Listing.

#[derive(Debug, Default)]
struct Query {
    page: usize,
    size: usize,
    sort: Vec<(String, bool)>,
    filter: Option<String>,
    record_data_filter: Option<String>,
    include_inactive: bool,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(raw: Option<&str>) -> Result<Query, ApiError> {
    let mut q = Query {
        size: 25,
        ..Default::default()
    };
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode(k), decode(v));
        match k.as_str() {
            "page" => {
                q.page = v.parse().map_err(|_| {
                    ApiError::validation("page", &v, "Field raised validation errors")
                })?
            }
            "size" => {
                q.size = v
                    .parse()
                    .ok()
                    .filter(|s| (1..=500).contains(s))
                    .ok_or_else(|| {
                        ApiError::validation(
                            "size",
                            &v,
                            "Field raised validation errors: size must be between 1 and 500",
                        )
                    })?
            }
            "sort" => {
                let (prop, dir) = v.split_once(',').unwrap_or((v.as_str(), "asc"));
                let desc = match dir.to_ascii_lowercase().as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => {
                        return Err(ApiError::validation(
                            "sort",
                            &v,
                            "Field raised validation errors: direction must be asc or desc",
                        ));
                    }
                };
                q.sort.push((prop.to_string(), desc));
            }
            "filter" if !v.trim().is_empty() => q.filter = Some(v),
            "recordDataFilter" if !v.trim().is_empty() => q.record_data_filter = Some(v),
            "includeInactive" => q.include_inactive = v.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    Ok(q)
}

use AttrType::{Bool as B, Date as D, Num as N, Str as S};

/// Filterable/sortable fields and default sort of each list endpoint.
fn schema(endpoint: &str) -> Option<(&'static [(&'static str, AttrType)], &'static str)> {
    Some(match endpoint {
        "studies" => (
            &[
                ("sponsorKey", S),
                ("studyKey", S),
                ("studyId", N),
                ("studyName", S),
                ("studyDescription", S),
                ("studyType", S),
                ("dateCreated", D),
                ("dateModified", D),
            ],
            "studyKey",
        ),
        "sites" => (
            &[
                ("studyKey", S),
                ("siteId", N),
                ("siteName", S),
                ("siteEnrollmentStatus", S),
                ("dateCreated", D),
                ("dateModified", D),
            ],
            "siteId",
        ),
        "subjects" => (
            &[
                ("studyKey", S),
                ("subjectId", N),
                ("subjectOid", S),
                ("subjectKey", S),
                ("subjectStatus", S),
                ("siteId", N),
                ("siteName", S),
                ("deleted", B),
                ("enrollmentStartDate", D),
                ("dateCreated", D),
                ("dateModified", D),
            ],
            "subjectId",
        ),
        "records" => (
            &[
                ("studyKey", S),
                ("intervalId", N),
                ("formId", N),
                ("formKey", S),
                ("siteId", N),
                ("recordId", N),
                ("recordOid", S),
                ("recordType", S),
                ("recordStatus", S),
                ("deleted", B),
                ("dateCreated", D),
                ("dateModified", D),
                ("subjectId", N),
                ("subjectOid", S),
                ("subjectKey", S),
                ("visitId", N),
                ("parentRecordId", N),
            ],
            "recordId",
        ),
        "recordRevisions" => (
            &[
                ("studyKey", S),
                ("recordRevisionId", N),
                ("recordId", N),
                ("recordOid", S),
                ("recordRevision", N),
                ("dataRevision", N),
                ("recordStatus", S),
                ("subjectId", N),
                ("subjectOid", S),
                ("subjectKey", S),
                ("siteId", N),
                ("formKey", S),
                ("intervalId", N),
                ("role", S),
                ("user", S),
                ("reasonForChange", S),
                ("deleted", B),
                ("dateCreated", D),
            ],
            "recordRevisionId",
        ),
        "forms" => (
            &[
                ("studyKey", S),
                ("formId", N),
                ("formKey", S),
                ("formName", S),
                ("formType", S),
                ("revision", N),
                ("embeddedLog", B),
                ("enforceOwnership", B),
                ("userAgreement", B),
                ("subjectRecordReport", B),
                ("unscheduledVisit", B),
                ("otherForms", B),
                ("eproForm", B),
                ("allowCopy", B),
                ("disabled", B),
                ("dateCreated", D),
                ("dateModified", D),
            ],
            "formId",
        ),
        "variables" => (
            &[
                ("studyKey", S),
                ("variableId", N),
                ("variableType", S),
                ("variableName", S),
                ("sequence", N),
                ("revision", N),
                ("disabled", B),
                ("dateCreated", D),
                ("dateModified", D),
                ("formId", N),
                ("variableOid", S),
                ("deleted", B),
                ("formKey", S),
                ("formName", S),
                ("label", S),
                ("blinded", B),
            ],
            "variableId",
        ),
        "intervals" => (
            &[
                ("studyKey", S),
                ("intervalId", N),
                ("intervalName", S),
                ("intervalDescription", S),
                ("intervalSequence", N),
                ("intervalGroupId", N),
                ("intervalGroupName", S),
                ("timeline", S),
                ("definedUsingInterval", S),
                ("windowCalculationForm", S),
                ("windowCalculationDate", S),
                ("actualDateForm", S),
                ("actualDate", S),
                ("dueDateWillBeIn", N),
                ("negativeSlack", N),
                ("positiveSlack", N),
                ("eproGracePeriod", N),
                ("disabled", B),
                ("dateCreated", D),
                ("dateModified", D),
            ],
            "intervalId",
        ),
        "visits" => (
            &[
                ("visitId", N),
                ("studyKey", S),
                ("intervalId", N),
                ("intervalName", S),
                ("subjectId", N),
                ("subjectKey", S),
                ("startDate", D),
                ("endDate", D),
                ("dueDate", D),
                ("visitDate", D),
                ("visitDateForm", S),
                ("visitDateQuestion", S),
                ("deleted", B),
                ("dateCreated", D),
                ("dateModified", D),
            ],
            "visitId",
        ),
        "queries" => (
            &[
                ("studyKey", S),
                ("subjectId", N),
                ("subjectOid", S),
                ("annotationType", S),
                ("annotationId", N),
                ("type", S),
                ("description", S),
                ("recordId", N),
                ("variable", S),
                ("subjectKey", S),
                ("dateCreated", D),
                ("dateModified", D),
            ],
            "annotationId",
        ),
        "codings" => (
            &[
                ("studyKey", S),
                ("siteName", S),
                ("siteId", N),
                ("subjectId", N),
                ("subjectKey", S),
                ("formId", N),
                ("formName", S),
                ("formKey", S),
                ("revision", N),
                ("recordId", N),
                ("variable", S),
                ("value", S),
                ("codingId", N),
                ("code", S),
                ("codedBy", S),
                ("reason", S),
                ("dictionaryName", S),
                ("dictionaryVersion", S),
                ("dateCoded", D),
            ],
            "recordId",
        ),
        "users" => (
            &[
                ("userId", S),
                ("login", S),
                ("firstName", S),
                ("lastName", S),
                ("email", S),
                ("userActiveInStudy", B),
            ],
            "login",
        ),
        _ => return None,
    })
}

/// Attribute lookup for `filter`, including the SDK's list helpers.
fn filter_attr(endpoint: &str, study_key: &str, attr: &str) -> Option<(AttrType, Access)> {
    let (fields, _) = schema(endpoint)?;
    // Every item of a study carries its key: a constant, so `studyKey==S` (which the SDK adds
    // to every list) folds away instead of forcing a scan of the whole study per page.
    // (The studies list is the one collection whose items differ in it.)
    if attr == "studyKey" && endpoint != "studies" && fields.iter().any(|(n, _)| *n == attr) {
        return Some((S, Access::Const(json!(study_key))));
    }
    if let Some((name, ty)) = fields.iter().find(|(n, _)| *n == attr) {
        return Some((*ty, Access::Field(name.to_string())));
    }
    match (endpoint, attr) {
        ("records" | "variables", "formIds") => Some((N, Access::Field("formId".into()))),
        ("records", "variableNames") => Some((S, Access::HasDataKey)),
        ("variables", "variableNames") => Some((S, Access::Field("variableName".into()))),
        ("users", "studyKey") => Some((S, Access::Const(json!(study_key)))),
        _ => None,
    }
}

fn cmp_values(a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Filter, sort and page a collection of `len` items produced by `get`.
/// Default-order pages without a filter cost O(page); anything else scans by generating,
/// keeping only sort keys and indices.
fn select(
    len: usize,
    get: &dyn Fn(usize) -> Value,
    bound: &Bound,
    sort: &[(String, bool)],
    default_sort: &str,
    page: usize,
    size: usize,
) -> (Vec<Value>, usize) {
    let start = page.saturating_mul(size);
    let natural = match sort {
        [] => Some(false),
        [(p, desc)] if p == default_sort => Some(*desc),
        _ => None,
    };
    if let Some(desc) = natural {
        let idx = |k: usize| if desc { len - 1 - k } else { k };
        if bound.is_empty() {
            let end = start.saturating_add(size).min(len);
            let items = (start.min(end)..end).map(|k| get(idx(k))).collect();
            return (items, len);
        }
        let mut total = 0;
        let mut items = Vec::new();
        for k in 0..len {
            let item = get(idx(k));
            if bound.matches(&item) {
                if total >= start && items.len() < size {
                    items.push(item);
                }
                total += 1;
            }
        }
        return (items, total);
    }
    let mut keyed: Vec<(Vec<Value>, usize)> = Vec::new();
    for i in 0..len {
        let item = get(i);
        if bound.matches(&item) {
            let keys = sort
                .iter()
                .map(|(p, _)| item.get(p).cloned().unwrap_or(Value::Null))
                .collect();
            keyed.push((keys, i));
        }
    }
    keyed.sort_by(|(a, ai), (b, bi)| {
        for (n, (_, desc)) in sort.iter().enumerate() {
            let o = cmp_values(&a[n], &b[n]);
            let o = if *desc { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        ai.cmp(bi)
    });
    let total = keyed.len();
    let items = keyed
        .into_iter()
        .skip(start)
        .take(size)
        .map(|(_, i)| get(i))
        .collect();
    (items, total)
}

impl Study {
    /// Apply jobs whose time is up (in submission order).
    fn settle(&self, done_after: Duration, new_id: &dyn Fn() -> String) {
        let mut jobs = lock(&self.jobs);
        for job in jobs.iter_mut().filter(|j| !j.applied) {
            if job.created.elapsed() < done_after {
                break;
            }
            job.applied = true;
            if let Ok(items) = &job.plan {
                let mut posted = write(&self.posted);
                for item in items {
                    self.apply(&mut posted, item, new_id);
                }
            }
        }
    }

    fn subject_at(&self, posted: &Posted, s: usize) -> Option<Value> {
        if s < self.data.n_subjects() {
            Some(self.data.subject(s))
        } else {
            posted.subjects.get(s - self.data.n_subjects()).cloned()
        }
    }

    fn record_at(&self, posted: &Posted, i: usize) -> Option<Value> {
        let n = self.data.n_records();
        if i < n {
            Some(
                posted
                    .overrides
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| self.data.record(i)),
            )
        } else {
            posted.records.get(i - n).cloned()
        }
    }

    fn apply(&self, posted: &mut Posted, item: &Planned, new_id: &dyn Fn() -> String) {
        let d = &self.data;
        let now = fmt_timestamp(now_secs());
        let form = &d.forms[item.form];
        let rec_count = d.n_records() + posted.records.len();
        let (record, index, revision) = match &item.target {
            Target::Record(i) => {
                let Some(mut rec) = self.record_at(posted, *i) else {
                    return;
                };
                if let Some(data) = rec.get_mut("recordData").and_then(Value::as_object_mut) {
                    data.extend(item.data.clone());
                }
                rec["dateModified"] = json!(now);
                let rev = posted
                    .revisions
                    .iter()
                    .filter(|r| r["recordId"] == rec["recordId"])
                    .count()
                    + if *i < d.n_records() { 3 } else { 1 };
                (rec, Some(*i), rev)
            }
            target => {
                let (subject, site) = match target {
                    Target::Register { site } => {
                        let s = d.n_subjects() + posted.subjects.len();
                        let site_v = &d.sites[*site];
                        let subj = json!({
                            "studyKey": d.spec.key, "subjectId": s + 1,
                            "subjectOid": format!("OID-S{}", s + 1),
                            "subjectKey": format!("{:02}-{:03}", site + 1, s + 1),
                            "subjectStatus": "Screened", "siteId": site + 1,
                            "siteName": site_v["siteName"], "deleted": false,
                            "enrollmentStartDate": &now[..10], "dateCreated": now,
                            "dateModified": now, "keywords": [],
                        });
                        posted.subjects.push(subj.clone());
                        (Some(subj), *site)
                    }
                    Target::Subject(s) => {
                        let subj = self.subject_at(posted, *s);
                        let site = subj
                            .as_ref()
                            .and_then(|v| v["siteId"].as_u64())
                            .unwrap_or(1) as usize;
                        let site = site.saturating_sub(1);
                        (subj, site)
                    }
                    Target::Site(site) => (None, *site),
                    Target::Record(_) => (None, 0),
                };
                let interval = item.interval.map(|k| k + 1).unwrap_or(0);
                let mut rec = json!({
                    "studyKey": d.spec.key, "intervalId": interval, "formId": item.form + 1,
                    "formKey": form["formKey"], "siteId": site + 1, "recordId": rec_count + 1,
                    "recordOid": format!("REC-{}", rec_count + 1),
                    "recordType": form["formType"], "recordStatus": "Record Incomplete",
                    "deleted": false, "dateCreated": now, "dateModified": now,
                    "subjectId": 0, "subjectOid": "", "subjectKey": "", "visitId": 0,
                    "parentRecordId": 0, "keywords": [], "recordData": item.data,
                });
                if let Some(s) = subject {
                    for k in ["subjectId", "subjectOid", "subjectKey"] {
                        rec[k] = s[k].clone();
                    }
                    if interval > 0 {
                        let sid = (s["subjectId"].as_u64().unwrap_or(1) as usize).saturating_sub(1);
                        rec["visitId"] = json!(sid * d.spec.intervals + interval);
                    }
                }
                (rec, None, 1)
            }
        };
        let rev_id = d.n_revisions() + posted.revisions.len() + 1;
        posted.revisions.push(json!({
            "studyKey": d.spec.key, "recordRevisionId": rev_id, "recordId": record["recordId"],
            "recordOid": record["recordOid"], "recordRevision": revision, "dataRevision": revision,
            "recordStatus": record["recordStatus"], "subjectId": record["subjectId"],
            "subjectOid": record["subjectOid"], "subjectKey": record["subjectKey"],
            "siteId": record["siteId"], "formKey": record["formKey"], "intervalId": record["intervalId"],
            "role": "API", "user": format!("api-{}", &new_id()[..8]),
            "reasonForChange": if revision == 1 { "" } else { "Updated through API" },
            "deleted": false, "dateCreated": now,
        }));
        match index {
            Some(i) if i < d.n_records() => {
                posted.overrides.insert(i, record);
            }
            Some(i) => {
                if let Some(slot) = posted.records.get_mut(i - d.n_records()) {
                    *slot = record;
                }
            }
            None => posted.records.push(record),
        }
    }

    /// Records in default order, unfiltered: encoded straight from the generator (a page of a
    /// large study is the hot path of every export and benchmark). `None` when `q` needs more.
    fn records_page_json(
        &self,
        posted: &Posted,
        q: &Query,
        bound: &Bound,
    ) -> Option<(Vec<u8>, usize)> {
        let desc = match q.sort.as_slice() {
            [] => false,
            [(p, desc)] if p == "recordId" => *desc,
            _ => return None,
        };
        if !bound.is_empty() {
            return None;
        }
        let d = &self.data;
        let len = d.n_records() + posted.records.len();
        let end = q
            .page
            .saturating_mul(q.size)
            .saturating_add(q.size)
            .min(len);
        let start = q.page.saturating_mul(q.size).min(end);
        let mut out = Vec::with_capacity((end - start) * 2048 + 2);
        out.push(b'[');
        for k in start..end {
            if k > start {
                out.push(b',');
            }
            let i = if desc { len - 1 - k } else { k };
            if i < d.n_records() && !posted.overrides.contains_key(&i) {
                d.write_record_json(i, &mut out);
            } else {
                let rec = self.record_at(posted, i).unwrap_or(Value::Null);
                let _ = serde_json::to_writer(&mut out, &rec);
            }
        }
        out.push(b']');
        Some((out, len))
    }

    fn list(&self, endpoint: &str, q: &Query) -> Result<(Items, usize, String), ApiError> {
        let (_, default_sort) = schema(endpoint)
            .ok_or_else(|| ApiError::not_found(format!("Unknown endpoint {endpoint}")))?;
        let key = self.data.spec.key.as_str();
        let mut bound = match &q.filter {
            Some(f) => {
                filter::parse(f, Dialect::Filter)?.bind(|a| filter_attr(endpoint, key, a))?
            }
            None => Bound::default(),
        };
        let mut rdf = Bound::default();
        if let Some(f) = &q.record_data_filter {
            if endpoint != "records" {
                return Err(ApiError::validation(
                    "recordDataFilter",
                    f,
                    "recordDataFilter is only supported on records",
                ));
            }
            let vars: HashMap<&str, &str> = self
                .data
                .form_vars
                .iter()
                .flatten()
                .map(|v| (v.name.as_str(), v.ty))
                .collect();
            rdf = filter::parse(f, Dialect::RecordData)?.bind(|a| {
                vars.get(a).map(|ty| {
                    let t = match *ty {
                        "NUMBER" | "CALCULATED" => N,
                        "CHECKBOX" => B,
                        _ => S,
                    };
                    (t, Access::RecordData(a.to_string()))
                })
            })?;
        }
        let (fields, _) = schema(endpoint).unwrap_or((&[], ""));
        for (p, _) in &q.sort {
            if !fields.iter().any(|(n, _)| n == p) {
                return Err(ApiError::validation(
                    "sort",
                    p,
                    format!("Field raised validation errors: cannot sort by {p}"),
                ));
            }
        }
        if endpoint == "users" && !q.include_inactive {
            let extra = filter::parse("userActiveInStudy==true", Dialect::Filter)?
                .bind(|a| filter_attr(endpoint, key, a))?;
            bound = bound.and(extra);
        }
        let combined = bound.and(rdf).fold_constants();
        let whitelist = combined.data_key_whitelist();

        let posted = read(&self.posted);
        if endpoint == "records"
            && let Some((json, total)) = self.records_page_json(&posted, q, &combined)
        {
            return Ok((Items::Json(json), total, default_sort.to_string()));
        }
        let d = &self.data;
        let (len, get): (usize, Box<dyn Fn(usize) -> Value + '_>) = match endpoint {
            "sites" => (d.sites.len(), Box::new(|i| d.sites[i].clone())),
            "forms" => (d.forms.len(), Box::new(|i| d.forms[i].clone())),
            "variables" => (d.variables.len(), Box::new(|i| d.variables[i].clone())),
            "intervals" => (d.intervals.len(), Box::new(|i| d.intervals[i].clone())),
            "users" => (d.users.len(), Box::new(|i| d.users[i].clone())),
            "subjects" => (
                d.n_subjects() + posted.subjects.len(),
                Box::new(|i| self.subject_at(&posted, i).unwrap_or(Value::Null)),
            ),
            "records" => (
                d.n_records() + posted.records.len(),
                Box::new(|i| self.record_at(&posted, i).unwrap_or(Value::Null)),
            ),
            "recordRevisions" => (
                d.n_revisions() + posted.revisions.len(),
                Box::new(|i| {
                    if i < d.n_revisions() {
                        d.revision(i)
                    } else {
                        posted.revisions[i - d.n_revisions()].clone()
                    }
                }),
            ),
            "queries" => (d.n_queries(), Box::new(|i| d.query(i))),
            "codings" => (d.n_codings(), Box::new(|i| d.coding(i))),
            "visits" => (d.n_visits(), Box::new(|i| d.visit(i))),
            _ => return Err(ApiError::not_found(format!("Unknown endpoint {endpoint}"))),
        };
        let (mut items, total) =
            select(len, &*get, &combined, &q.sort, default_sort, q.page, q.size);
        if !whitelist.is_empty() {
            for item in &mut items {
                if let Some(data) = item.get_mut("recordData").and_then(Value::as_object_mut) {
                    data.retain(|k, _| whitelist.iter().any(|w| w == k));
                }
            }
        }
        Ok((Items::Values(items), total, default_sort.to_string()))
    }

    /// Validate one submitted item against the study.
    fn plan(&self, posted: &Posted, item: &Value) -> Result<Planned, String> {
        let d = &self.data;
        let obj = item.as_object().ok_or("item is not an object")?;
        let text = |k: &str| {
            obj.get(k).and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let num = |k: &str| text(k).and_then(|s| s.parse::<usize>().ok());
        let form = if let Some(k) = text("formKey") {
            d.forms.iter().position(|f| f["formKey"] == k.as_str())
        } else {
            num("formId")
                .filter(|i| (1..=d.forms.len()).contains(i))
                .map(|i| i - 1)
        }
        .ok_or("unknown or missing form (formKey/formId)")?;
        let site = if let Some(name) = text("siteName") {
            Some(
                d.sites
                    .iter()
                    .position(|s| s["siteName"] == name.as_str())
                    .ok_or(format!("unknown site {name:?}"))?,
            )
        } else if let Some(id) = text("siteId") {
            Some(
                one_based(id.parse().unwrap_or(0), d.sites.len(), "siteId")
                    .map_err(|_| format!("unknown siteId {id}"))?,
            )
        } else {
            None
        };
        let n_subj = d.n_subjects() + posted.subjects.len();
        let subject = if let Some(k) = text("subjectKey") {
            Some(
                find_subject(self, posted, "subjectKey", &k)
                    .ok_or(format!("unknown subjectKey {k:?}"))?,
            )
        } else if let Some(id) = num("subjectId") {
            Some(one_based(id, n_subj, "subjectId")?)
        } else if let Some(oid) = text("subjectOid") {
            Some(
                find_subject(self, posted, "subjectOid", &oid)
                    .ok_or(format!("unknown subjectOid {oid:?}"))?,
            )
        } else {
            None
        };
        let interval = if let Some(name) = text("intervalName") {
            Some(
                d.intervals
                    .iter()
                    .position(|i| i["intervalName"] == name.as_str())
                    .ok_or(format!("unknown interval {name:?}"))?,
            )
        } else if let Some(id) = num("intervalId") {
            Some(one_based(id, d.intervals.len(), "intervalId")?)
        } else {
            None
        };
        let n_rec = d.n_records() + posted.records.len();
        let record = if let Some(id) = num("recordId") {
            Some(one_based(id, n_rec, "recordId")?)
        } else if let Some(oid) = text("recordOid") {
            let id = oid
                .strip_prefix("REC-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|i| (1..=n_rec).contains(i))
                .ok_or(format!("unknown recordOid {oid:?}"))?;
            Some(id - 1)
        } else {
            None
        };
        let data = match obj.get("data") {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => serde_json::Map::new(),
            _ => return Err("data must be an object".into()),
        };
        let vars = &d.form_vars[form];
        if let Some(bad) = data.keys().find(|k| !vars.iter().any(|v| &v.name == *k)) {
            return Err(format!(
                "variable {bad:?} is not on form {}",
                d.forms[form]["formKey"]
            ));
        }
        if data.values().any(|v| v.is_object() || v.is_array()) {
            return Err("data values must be scalars".into());
        }
        let site_form = d.forms[form]["formType"] == "SITE";
        let target = if let Some(r) = record {
            let rec = self.record_at(posted, r).unwrap_or(Value::Null);
            if rec["formId"] != json!(form + 1) {
                return Err(format!(
                    "record {} is not a {} record",
                    r + 1,
                    d.forms[form]["formKey"]
                ));
            }
            Target::Record(r)
        } else if site_form {
            Target::Site(site.ok_or("a SITE form needs siteName or siteId")?)
        } else if let Some(s) = subject {
            if site.is_some() && text("subjectKey").is_some() {
                return Err("a registration must not carry subjectKey".into());
            }
            Target::Subject(s)
        } else {
            Target::Register {
                site: site.ok_or(
                    "need a subject (subjectKey/subjectId/subjectOid) or a site to register at",
                )?,
            }
        };
        Ok(Planned {
            form,
            target,
            interval,
            data,
        })
    }
}

fn find_subject(study: &Study, posted: &Posted, field: &str, want: &str) -> Option<usize> {
    let d = &study.data;
    // Generated keys/oids encode the index: "SS-NNN" and "OID-SNNN".
    let guess = match field {
        "subjectKey" => want
            .split_once('-')
            .and_then(|(_, n)| n.parse::<usize>().ok()),
        _ => want
            .strip_prefix("OID-S")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    if let Some(n) = guess.filter(|n| (1..=d.n_subjects()).contains(n))
        && d.subject(n - 1)[field] == want
    {
        return Some(n - 1);
    }
    posted
        .subjects
        .iter()
        .position(|s| s[field] == want)
        .map(|p| p + d.n_subjects())
}

// ---------------------------------------------------------------------------
// Handlers.

async fn list_studies(
    State(state): State<SimState>,
    method: Method,
    uri: axum::http::Uri,
    RawQuery(raw): RawQuery,
) -> Response {
    let path = uri.path().to_string();
    let result = (|| {
        let q = parse_query(raw.as_deref())?;
        let bound = match &q.filter {
            Some(f) => {
                filter::parse(f, Dialect::Filter)?.bind(|a| filter_attr("studies", "", a))?
            }
            None => Bound::default(),
        };
        let (fields, _) = schema("studies").unwrap_or((&[], ""));
        if let Some((p, _)) = q
            .sort
            .iter()
            .find(|(p, _)| !fields.iter().any(|(n, _)| n == p))
        {
            return Err(ApiError::validation(
                "sort",
                p,
                "Field raised validation errors",
            ));
        }
        // Generated order is not key order, so always sort explicitly.
        let sort = if q.sort.is_empty() {
            vec![("studyKey".to_string(), false)]
        } else {
            q.sort.clone()
        };
        let studies = &state.0.studies;
        let (items, total) = select(
            studies.len(),
            &|i| studies[i].data.study.clone(),
            &bound,
            &sort,
            "",
            q.page,
            q.size,
        );
        Ok((items, total, q))
    })();
    match result {
        Ok((items, total, q)) => {
            let p = pagination(&q, total, "studyKey");
            axum::Json(envelope(&method, &path, Some(p), items)).into_response()
        }
        Err(e) => e.respond(&method, &path),
    }
}

fn pagination(q: &Query, total: usize, default_sort: &str) -> Value {
    let sort: Vec<Value> = if q.sort.is_empty() {
        vec![json!({"property": default_sort, "direction": "ASC"})]
    } else {
        q.sort
            .iter()
            .map(|(p, d)| json!({"property": p, "direction": if *d { "DESC" } else { "ASC" }}))
            .collect()
    };
    json!({"currentPage": q.page, "size": q.size, "totalPages": total.div_ceil(q.size),
           "totalElements": total, "sort": sort})
}

fn study_index(state: &SimState, key: &str) -> Result<usize, ApiError> {
    state
        .0
        .by_key
        .get(key)
        .copied()
        .ok_or_else(|| ApiError::not_found(format!("Study {key} not found")))
}

async fn list_study_endpoint(
    State(state): State<SimState>,
    Path((study, endpoint)): Path<(String, String)>,
    method: Method,
    uri: axum::http::Uri,
    RawQuery(raw): RawQuery,
) -> Response {
    let path = uri.path().to_string();
    let idx = match study_index(&state, &study) {
        Ok(i) => i,
        Err(e) => return e.respond(&method, &path),
    };
    let st = state.clone();
    let new_id = move || st.next_id();
    let s2 = state.clone();
    let run = move || -> Result<Response, ApiError> {
        let study = &s2.0.studies[idx];
        study.settle(s2.0.done_after, &new_id);
        if endpoint == "jobs" {
            let jobs = lock(&study.jobs);
            let list: Vec<Value> = jobs.iter().map(|j| job_json(&s2, j)).collect();
            return Ok(axum::Json(Value::Array(list)).into_response());
        }
        let q = parse_query(raw.as_deref())?;
        let (items, total, default_sort) = study.list(&endpoint, &q)?;
        let p = pagination(&q, total, &default_sort);
        Ok(match items {
            Items::Values(items) => {
                axum::Json(envelope(&Method::GET, &path, Some(p), items)).into_response()
            }
            Items::Json(data) => envelope_response(&Method::GET, &path, &p, &data),
        })
    };
    let path = uri.path().to_string();
    // Large-profile filters scan by generating: keep that off the async workers.
    match tokio::task::spawn_blocking(run).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => e.respond(&method, &path),
        Err(_) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "9000",
            description: "internal error".into(),
            field: None,
        }
        .respond(&method, &path),
    }
}

fn job_json(state: &SimState, j: &Job) -> Value {
    let elapsed = j.created.elapsed();
    let (state_s, progress) = if elapsed >= state.0.done_after {
        (
            if j.plan.is_ok() {
                "completed"
            } else {
                "failed"
            },
            100,
        )
    } else if elapsed >= state.0.running_after {
        ("running", 50)
    } else {
        ("created", 0)
    };
    let ms = |d: Duration| (d.as_millis() / 1000) as i64;
    let started = j.created_ts + ms(state.0.running_after);
    let finished = j.created_ts + ms(state.0.done_after);
    let mut v = json!({
        "jobId": j.job_id, "batchId": j.batch_id, "state": state_s,
        "dateCreated": fmt_timestamp(j.created_ts),
        "dateStarted": if state_s == "created" { Value::Null } else { json!(fmt_timestamp(started)) },
        "dateFinished": if progress == 100 { json!(fmt_timestamp(finished)) } else { Value::Null },
        "progress": progress, "resultUrl": "",
    });
    if let Err(reason) = &j.plan
        && progress == 100
    {
        v["error"] = json!(reason);
    }
    v
}

async fn get_job(
    State(state): State<SimState>,
    Path((study, batch)): Path<(String, String)>,
    method: Method,
    uri: axum::http::Uri,
) -> Response {
    let path = uri.path().to_string();
    let idx = match study_index(&state, &study) {
        Ok(i) => i,
        Err(e) => return e.respond(&method, &path),
    };
    let st = state.clone();
    let study = &state.0.studies[idx];
    study.settle(state.0.done_after, &|| st.next_id());
    let jobs = lock(&study.jobs);
    match jobs.iter().find(|j| j.batch_id == batch) {
        Some(j) => axum::Json(job_json(&state, j)).into_response(),
        None => ApiError::not_found(format!("Job {batch} not found")).respond(&method, &path),
    }
}

async fn post_records(
    State(state): State<SimState>,
    Path((study, endpoint)): Path<(String, String)>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_string();
    let result = (|| {
        let idx = study_index(&state, &study)?;
        if endpoint != "records" {
            return Err(ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "9000",
                description: format!("POST is not supported on {endpoint}"),
                field: None,
            });
        }
        if let Some(v) = headers.get("x-email-notify")
            && v.as_bytes().iter().any(|b| *b == b'\r' || *b == b'\n')
        {
            return Err(ApiError::validation(
                "x-email-notify",
                "",
                "invalid header value",
            ));
        }
        let items: Vec<Value> = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(a)) if !a.is_empty() => a,
            Ok(Value::Array(_)) => {
                return Err(ApiError::validation(
                    "records",
                    "[]",
                    "no records submitted",
                ));
            }
            _ => {
                return Err(ApiError::validation(
                    "records",
                    "",
                    "body must be a JSON array of records",
                ));
            }
        };
        let st = &state.0.studies[idx];
        st.settle(state.0.done_after, &|| state.next_id());
        let plan = {
            let posted = read(&st.posted);
            items
                .iter()
                .enumerate()
                .map(|(n, item)| st.plan(&posted, item).map_err(|e| format!("item {n}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let (job_id, batch_id) = (state.next_id(), state.next_id());
        lock(&st.jobs).push(Job {
            job_id: job_id.clone(),
            batch_id: batch_id.clone(),
            created: Instant::now(),
            created_ts: now_secs(),
            plan,
            applied: false,
        });
        Ok(json!({"jobId": job_id, "batchId": batch_id, "state": "created"}))
    })();
    match result {
        Ok(v) => (StatusCode::ACCEPTED, axum::Json(v)).into_response(),
        Err(e) => e.respond(&method, &path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_record_pages_match_the_generic_path() {
        let state = SimState::new(SimConfig::default());
        let study = &state.0.studies[0];
        {
            // One changed record and one added record must show on the fast path too.
            let mut posted = write(&study.posted);
            let data: serde_json::Map<String, Value> = [("DM_text1".to_string(), json!("changed"))]
                .into_iter()
                .collect();
            for target in [Target::Record(3), Target::Subject(0)] {
                let item = Planned {
                    form: 0,
                    target,
                    interval: Some(0),
                    data: data.clone(),
                };
                study.apply(&mut posted, &item, &|| "00000000-x".to_string());
            }
        }
        let posted = read(&study.posted);
        let len = study.data.n_records() + posted.records.len();
        let get = |i: usize| study.record_at(&posted, i).unwrap_or(Value::Null);
        for (sort, page, size) in [
            (vec![], 0, 7),
            (vec![], 68, 7),
            (vec![("recordId".to_string(), true)], 0, 5),
            (vec![("recordId".to_string(), false)], 1, 500),
            (vec![], 9, 500),
        ] {
            let q = Query {
                page,
                size,
                sort: sort.clone(),
                ..Query::default()
            };
            let (json, total) = study
                .records_page_json(&posted, &q, &Bound::default())
                .unwrap();
            let (items, expected_total) =
                select(len, &get, &Bound::default(), &sort, "recordId", page, size);
            assert_eq!(total, expected_total);
            assert_eq!(json, serde_json::to_vec(&items).unwrap(), "{sort:?} {page}");
        }
        let sorted = Query {
            sort: vec![("formId".to_string(), false)],
            size: 5,
            ..Query::default()
        };
        assert!(
            study
                .records_page_json(&posted, &sorted, &Bound::default())
                .is_none()
        );
    }
}
