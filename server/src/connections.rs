//! Connections: named credentials for iMednet and S3, as the Airflow provider's users know them.
//!
//! Secret fields are encrypted with the [`KeyRing`] before they reach the database (associated
//! data binds connection id and field) and leave this module only as [`SecretString`]s for the
//! clients that need them. Everything shown to people is built from [`ConnectionInfo`] and
//! [`Connections::describe`], which carry `***` and "configured" flags, never a value.
//!
//! Webhook and SMTP connections are alert targets ([`targets`]).
//!
//! iMednet fields fall back to `IMEDNET_API_KEY`, `IMEDNET_SECURITY_KEY` and `IMEDNET_BASE_URL`
//! where the connection leaves them blank, like the provider.
use crate::imednet::{ClientConfig, ImednetClient};
use crate::objstore::{AwsConnection, S3Store};
use crate::secrets::{KeyRing, MASK, SecretError, SecretString, is_sensitive_key, redact_text};
use crate::store::connections::ConnectionRow;
use crate::store::{Db, StoreError};
use app::model::{ConnectionInfo, ConnectionInput, ConnectionKind, ConnectionTest, SecretStatus};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub mod targets;

/// Who the demo connection is recorded as made by.
const DEMO_ACTOR: &str = "demo";

/// The real API, used when neither the connection nor the environment names a base URL.
pub const DEFAULT_IMEDNET_BASE_URL: &str = "https://edc.prod.imednetapi.com";

/// Client options a connection's `extra` may set; anything else is refused by name.
const IMEDNET_EXTRA_OPTIONS: &[&str] = &[
    "timeout_seconds",
    "requests_per_second",
    "max_concurrency",
    "max_retries",
    "page_size",
];

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection `{0}` does not exist; create it on the Connections page (or with the API)")]
    NotFound(String),
    #[error("connection `{0}` already exists")]
    Exists(String),
    #[error("connection `{conn_id}` is a {actual} connection, not {expected}")]
    WrongKind {
        conn_id: String,
        expected: ConnectionKind,
        actual: String,
    },
    #[error("connection `{conn_id}` has no {what}: {hint}")]
    Missing {
        conn_id: String,
        what: &'static str,
        hint: &'static str,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConnectionError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConnectionError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The provider's environment fallback, read once at start (tests pass their own).
#[derive(Clone, Default)]
pub struct EnvFallback {
    pub api_key: Option<SecretString>,
    pub security_key: Option<SecretString>,
    pub base_url: Option<String>,
}

impl EnvFallback {
    pub fn from_process() -> Self {
        let read = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        EnvFallback {
            api_key: read("IMEDNET_API_KEY").map(SecretString::from),
            security_key: read("IMEDNET_SECURITY_KEY").map(SecretString::from),
            base_url: read("IMEDNET_BASE_URL"),
        }
    }

    fn secret(&self, field: &str) -> Option<&SecretString> {
        match field {
            "api_key" => self.api_key.as_ref(),
            "security_key" => self.security_key.as_ref(),
            _ => None,
        }
    }
}

/// Every secret value this process has seen, so logs, task logs, errors and results can be
/// scrubbed of them by value (a secret echoed back by a server still never leaves).
#[derive(Clone, Default)]
pub struct KnownSecrets(Arc<RwLock<Vec<SecretString>>>);

impl KnownSecrets {
    pub fn add(&self, secret: &SecretString) {
        if secret.is_empty() {
            return;
        }
        if let Ok(mut list) = self.0.write()
            && !list
                .iter()
                .any(|s| s.expose_secret() == secret.expose_secret())
        {
            list.push(secret.clone());
        }
    }

    pub fn redact_text(&self, text: &str) -> String {
        match self.0.read() {
            Ok(list) => {
                let values: Vec<&str> = list.iter().map(SecretString::expose_secret).collect();
                redact_text(text, &values)
            }
            Err(_) => text.to_owned(),
        }
    }

    /// Masks sensitive keys at any depth, then known secret values inside every string.
    pub fn redact_json(&self, value: &Value) -> Value {
        self.scrub(&crate::secrets::redact_json(value))
    }

    fn scrub(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.redact_text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.scrub(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact_text(k), self.scrub(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// A resolved iMednet connection, ready to build a client.
pub struct ImednetSettings {
    pub conn_id: String,
    pub base_url: String,
    api_key: SecretString,
    security_key: SecretString,
    extra: Map<String, Value>,
}

impl ImednetSettings {
    pub fn client_config(&self) -> Result<ClientConfig, ConnectionError> {
        let mut cfg = ClientConfig::new(
            &self.base_url,
            self.api_key.expose_secret(),
            self.security_key.expose_secret(),
        );
        apply_imednet_extra(&mut cfg, &self.extra)?;
        Ok(cfg)
    }

    pub fn client(&self) -> Result<ImednetClient, ConnectionError> {
        ImednetClient::new(self.client_config()?).map_err(|e| {
            ConnectionError::invalid(format!("connection {}", self.conn_id), e.to_string())
        })
    }
}

/// Applies (and so validates) a connection's `extra` client options.
fn apply_imednet_extra(
    cfg: &mut ClientConfig,
    extra: &Map<String, Value>,
) -> Result<(), ConnectionError> {
    for (key, value) in extra {
        let bad = |expected: &str| ConnectionError::invalid(format!("extra.{key}"), expected);
        let positive = || value.as_f64().filter(|v| *v > 0.0 && v.is_finite());
        let count = || value.as_u64().and_then(|v| usize::try_from(v).ok());
        match key.as_str() {
            "timeout_seconds" => {
                cfg.timeout = Duration::from_secs_f64(
                    positive().ok_or_else(|| bad("a positive number of seconds"))?,
                );
            }
            "requests_per_second" => {
                cfg.requests_per_second = Some(positive().ok_or_else(|| bad("a positive number"))?);
            }
            "max_concurrency" => {
                cfg.max_concurrency = count()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| bad("a whole number from 1 to 64"))?;
            }
            "max_retries" => {
                cfg.max_retries = count()
                    .filter(|n| *n <= 10)
                    .ok_or_else(|| bad("a whole number from 0 to 10"))?;
            }
            "page_size" => {
                cfg.page_size = count()
                    .filter(|n| (1..=500).contains(n))
                    .ok_or_else(|| bad("a whole number from 1 to 500"))?;
            }
            other => {
                return Err(ConnectionError::invalid(
                    "extra",
                    format!(
                        "unknown option `{other}`; known options: {}",
                        IMEDNET_EXTRA_OPTIONS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A resolved S3 connection.
pub struct AwsSettings {
    pub conn_id: String,
    pub connection: AwsConnection,
    pub bucket: Option<String>,
}

impl AwsSettings {
    pub fn store(&self) -> Result<S3Store, ConnectionError> {
        S3Store::new(&self.connection).map_err(|e| {
            ConnectionError::invalid(format!("connection {}", self.conn_id), e.to_string())
        })
    }
}

/// A row with its JSON columns decoded.
struct Stored {
    conn_id: String,
    kind: ConnectionKind,
    description: String,
    settings: Map<String, Value>,
    secrets: BTreeMap<String, String>,
    updated_at: i64,
    updated_by: String,
}

impl Stored {
    fn decode(row: ConnectionRow) -> Result<Stored, ConnectionError> {
        let corrupt = |what: &str| {
            ConnectionError::invalid(
                format!("connection {}", row.conn_id),
                format!("stored {what} is unreadable"),
            )
        };
        let kind = row.kind.parse().map_err(|_| corrupt("kind"))?;
        let settings = match serde_json::from_str(&row.settings) {
            Ok(Value::Object(map)) => map,
            _ => return Err(corrupt("settings")),
        };
        let secrets = serde_json::from_str(&row.secrets).map_err(|_| corrupt("secrets"))?;
        Ok(Stored {
            conn_id: row.conn_id,
            kind,
            description: row.description,
            settings,
            secrets,
            updated_at: row.updated_at,
            updated_by: row.updated_by,
        })
    }

    fn setting(&self, name: &str) -> String {
        match self.settings.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        }
    }
}

pub struct Connections {
    db: Db,
    keys: RwLock<KeyRing>,
    env: EnvFallback,
    known: KnownSecrets,
}

impl Connections {
    pub fn new(db: Db, keys: KeyRing, env: EnvFallback) -> Connections {
        let known = KnownSecrets::default();
        for secret in [&env.api_key, &env.security_key].into_iter().flatten() {
            known.add(secret);
        }
        Connections {
            db,
            keys: RwLock::new(keys),
            env,
            known,
        }
    }

    /// The scrubber shared with task logs and results.
    pub fn known_secrets(&self) -> KnownSecrets {
        self.known.clone()
    }

    /// Decrypts every stored secret once so the scrubber knows them before any task runs.
    /// Values that fail to decrypt are reported, not fatal: the rest of the app still works.
    pub async fn learn_secrets(&self) -> Result<(), ConnectionError> {
        for row in self.db.list_connection_rows().await? {
            let conn_id = row.conn_id.clone();
            match Stored::decode(row) {
                Ok(stored) => {
                    for field in stored.secrets.keys() {
                        if let Err(e) = self.secret(&stored, field) {
                            tracing::warn!(conn_id = %conn_id, field = %field, error = %e, "stored secret unreadable");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(conn_id = %conn_id, error = %e, "stored connection unreadable")
                }
            }
        }
        Ok(())
    }

    async fn load(&self, conn_id: &str) -> Result<Option<Stored>, ConnectionError> {
        match self.db.connection_row(conn_id).await? {
            Some(row) => Ok(Some(Stored::decode(row)?)),
            None => Ok(None),
        }
    }

    /// Decrypts one field; reloads the key ring once when another process rotated it.
    fn secret(
        &self,
        stored: &Stored,
        field: &str,
    ) -> Result<Option<SecretString>, ConnectionError> {
        let Some(value) = stored.secrets.get(field) else {
            return Ok(None);
        };
        let attempt = |keys: &KeyRing| keys.decrypt(value, &stored.conn_id, field);
        let result = match self.keys.read().map(|k| attempt(&k)) {
            Ok(Err(SecretError::UnknownKey(_))) => {
                let mut keys = self
                    .keys
                    .write()
                    .map_err(|_| ConnectionError::invalid("key ring", "lock poisoned"))?;
                keys.reload()?;
                attempt(&keys)
            }
            Ok(other) => other,
            Err(_) => return Err(ConnectionError::invalid("key ring", "lock poisoned")),
        };
        let secret = result?;
        self.known.add(&secret);
        Ok(Some(secret))
    }

    fn encrypt(&self, plain: &str, conn_id: &str, field: &str) -> Result<String, ConnectionError> {
        let keys = self
            .keys
            .read()
            .map_err(|_| ConnectionError::invalid("key ring", "lock poisoned"))?;
        Ok(keys.encrypt(plain, conn_id, field)?)
    }

    fn status(&self, stored: &Stored, field: &str) -> SecretStatus {
        let source = if stored.secrets.contains_key(field) {
            "connection"
        } else if stored.kind == ConnectionKind::Imednet && self.env.secret(field).is_some() {
            "env"
        } else {
            "missing"
        };
        SecretStatus {
            field: field.to_string(),
            configured: source != "missing",
            source: source.to_string(),
        }
    }

    fn info(&self, stored: &Stored) -> ConnectionInfo {
        let fields = stored.kind.fields();
        ConnectionInfo {
            conn_id: stored.conn_id.clone(),
            kind: stored.kind,
            description: stored.description.clone(),
            settings: fields
                .iter()
                .filter(|f| !f.secret)
                .map(|f| (f.name.to_string(), stored.setting(f.name)))
                .collect(),
            secrets: fields
                .iter()
                .filter(|f| f.secret)
                .map(|f| self.status(stored, f.name))
                .collect(),
            updated_at: stored.updated_at,
            updated_by: stored.updated_by.clone(),
        }
    }

    pub async fn list(&self) -> Result<Vec<ConnectionInfo>, ConnectionError> {
        let mut out = Vec::new();
        for row in self.db.list_connection_rows().await? {
            out.push(self.info(&Stored::decode(row)?));
        }
        Ok(out)
    }

    pub async fn get(&self, conn_id: &str) -> Result<ConnectionInfo, ConnectionError> {
        let stored = self
            .load(conn_id)
            .await?
            .ok_or_else(|| ConnectionError::NotFound(conn_id.into()))?;
        Ok(self.info(&stored))
    }

    /// The provider's `describe_connection()` shape: settings, `***` for each secret that is
    /// configured (stored or from the environment) and `<field>_configured` flags.
    pub async fn describe(&self, conn_id: &str) -> Result<Value, ConnectionError> {
        let info = self.get(conn_id).await?;
        let mut out = Map::new();
        out.insert("conn_id".into(), json!(info.conn_id));
        out.insert("kind".into(), json!(info.kind));
        if info.kind == ConnectionKind::Imednet {
            let base_url = match info.setting("base_url") {
                "" => self
                    .env
                    .base_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_IMEDNET_BASE_URL.into()),
                url => url.to_string(),
            };
            out.insert("imednet_conn_id".into(), json!(info.conn_id));
            out.insert("base_url".into(), json!(base_url));
        } else {
            for (name, value) in &info.settings {
                out.insert(name.clone(), json!(value));
            }
        }
        for s in &info.secrets {
            out.insert(
                s.field.clone(),
                if s.configured {
                    json!(MASK)
                } else {
                    Value::Null
                },
            );
        }
        // The flags go in after the masked values: their names contain "key" fragments the
        // JSON redactor would otherwise mask.
        for s in &info.secrets {
            out.insert(format!("{}_configured", s.field), json!(s.configured));
            out.insert(format!("{}_source", s.field), json!(s.source));
        }
        Ok(Value::Object(out))
    }

    /// Creates or edits a connection. Blank secret inputs keep the stored value.
    pub async fn save(
        &self,
        input: &ConnectionInput,
        actor: &str,
    ) -> Result<ConnectionInfo, ConnectionError> {
        let conn_id = input.conn_id.trim();
        validate_conn_id(conn_id)?;
        let kind: ConnectionKind = input
            .kind
            .parse()
            .map_err(|e: String| ConnectionError::invalid("kind", e))?;
        let existing = self.load(conn_id).await?;
        if let Some(existing) = &existing {
            if input.create {
                return Err(ConnectionError::Exists(conn_id.into()));
            }
            if existing.kind != kind {
                return Err(ConnectionError::invalid(
                    "kind",
                    format!(
                        "`{conn_id}` is a {} connection; delete it to change its kind",
                        existing.kind
                    ),
                ));
            }
        } else if !input.create {
            return Err(ConnectionError::NotFound(conn_id.into()));
        }
        for name in &input.clear {
            if !kind.field(name).is_some_and(|f| f.secret) {
                return Err(ConnectionError::invalid(
                    "clear",
                    format!("`{name}` is not a secret field of a {kind} connection"),
                ));
            }
        }

        let (settings, new_secrets) = validate_fields(kind, input)?;
        let mut secrets = existing
            .as_ref()
            .map(|e| e.secrets.clone())
            .unwrap_or_default();
        for name in &input.clear {
            secrets.remove(name);
        }
        // Provider compatibility: keys given in `extra` fill blank secret fields.
        for (field, value) in &new_secrets {
            secrets.insert(
                field.to_string(),
                self.encrypt(value.expose_secret(), conn_id, field)?,
            );
            self.known.add(value);
        }
        let row = ConnectionRow {
            conn_id: conn_id.to_string(),
            kind: kind.as_str().to_string(),
            description: input.description.trim().to_string(),
            settings: Value::Object(settings).to_string(),
            secrets: serde_json::to_string(&secrets).unwrap_or_else(|_| "{}".into()),
            created_at: 0,
            updated_at: 0,
            updated_by: actor.to_string(),
        };
        if existing.is_some() {
            if !self.db.update_connection_row(&row).await? {
                return Err(ConnectionError::NotFound(conn_id.into()));
            }
        } else if let Err(e) = self.db.insert_connection_row(&row).await {
            return Err(if e.is_unique_violation() {
                ConnectionError::Exists(conn_id.into())
            } else {
                e.into()
            });
        }
        self.get(conn_id).await
    }

    /// Demo mode: `imednet_default` pointing at the simulator this server mounts and
    /// `aws_default` at its demo S3 endpoint. A connection someone else made is left alone; the
    /// demo's own follow the server's address.
    pub async fn ensure_demo(
        &self,
        simulator_url: &str,
        s3_endpoint: &str,
    ) -> Result<(), ConnectionError> {
        use crate::objstore::demo_server as s3;
        let imednet = ConnectionInput {
            conn_id: ConnectionKind::Imednet.default_id().into(),
            kind: ConnectionKind::Imednet.as_str().into(),
            description: "Demo: the built-in iMednet simulator".into(),
            base_url: Some(simulator_url.into()),
            api_key: Some(crate::imednet::DEMO_API_KEY.into()),
            security_key: Some(crate::imednet::DEMO_SECURITY_KEY.into()),
            ..ConnectionInput::default()
        };
        let aws = ConnectionInput {
            conn_id: ConnectionKind::Aws.default_id().into(),
            kind: ConnectionKind::Aws.as_str().into(),
            description:
                "Demo: the built-in S3-compatible endpoint (files under <data dir>/demo-s3)".into(),
            access_key_id: Some(s3::DEMO_ACCESS_KEY_ID.into()),
            secret_access_key: Some(s3::DEMO_SECRET_ACCESS_KEY.into()),
            endpoint_url: Some(s3_endpoint.into()),
            path_style: Some("true".into()),
            bucket: Some(s3::DEMO_BUCKET.into()),
            ..ConnectionInput::default()
        };
        for mut input in [imednet, aws] {
            let existing = self.load(&input.conn_id).await?;
            if existing
                .as_ref()
                .is_some_and(|c| c.updated_by != DEMO_ACTOR)
            {
                continue;
            }
            input.create = existing.is_none();
            self.save(&input, DEMO_ACTOR).await?;
        }
        Ok(())
    }

    pub async fn delete(&self, conn_id: &str) -> Result<(), ConnectionError> {
        if self.db.delete_connection_row(conn_id).await? {
            Ok(())
        } else {
            Err(ConnectionError::NotFound(conn_id.into()))
        }
    }

    /// The iMednet settings for `conn_id`, with the environment filling blank fields. The
    /// default id works from the environment alone, like the provider.
    pub async fn imednet(&self, conn_id: &str) -> Result<ImednetSettings, ConnectionError> {
        let stored = self.load(conn_id).await?;
        let stored = match stored {
            Some(s) if s.kind != ConnectionKind::Imednet => {
                return Err(ConnectionError::WrongKind {
                    conn_id: conn_id.into(),
                    expected: ConnectionKind::Imednet,
                    actual: s.kind.to_string(),
                });
            }
            Some(s) => Some(s),
            None if conn_id == ConnectionKind::Imednet.default_id()
                && self.env.api_key.is_some() =>
            {
                None
            }
            None => return Err(ConnectionError::NotFound(conn_id.into())),
        };
        let from_conn = |field: &str| -> Result<Option<SecretString>, ConnectionError> {
            match &stored {
                Some(s) => self.secret(s, field),
                None => Ok(None),
            }
        };
        let api_key = from_conn("api_key")?
            .or_else(|| self.env.api_key.clone())
            .ok_or(ConnectionError::Missing {
                conn_id: conn_id.into(),
                what: "API key",
                hint: "set it on the connection or in IMEDNET_API_KEY",
            })?;
        let security_key = from_conn("security_key")?
            .or_else(|| self.env.security_key.clone())
            .ok_or(ConnectionError::Missing {
                conn_id: conn_id.into(),
                what: "security key",
                hint: "set it on the connection or in IMEDNET_SECURITY_KEY",
            })?;
        let base_url = stored
            .as_ref()
            .map(|s| s.setting("base_url"))
            .filter(|u| !u.is_empty())
            .or_else(|| self.env.base_url.clone())
            .unwrap_or_else(|| DEFAULT_IMEDNET_BASE_URL.into());
        let extra = match stored.as_ref().and_then(|s| s.settings.get("extra")) {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        Ok(ImednetSettings {
            conn_id: conn_id.into(),
            base_url,
            api_key,
            security_key,
            extra,
        })
    }

    pub async fn aws(&self, conn_id: &str) -> Result<AwsSettings, ConnectionError> {
        let stored = self
            .load(conn_id)
            .await?
            .ok_or_else(|| ConnectionError::NotFound(conn_id.into()))?;
        if stored.kind != ConnectionKind::Aws {
            return Err(ConnectionError::WrongKind {
                conn_id: conn_id.into(),
                expected: ConnectionKind::Aws,
                actual: stored.kind.to_string(),
            });
        }
        let missing = |what| ConnectionError::Missing {
            conn_id: conn_id.into(),
            what,
            hint: "set it on the Connections page",
        };
        let access_key_id = self
            .secret(&stored, "access_key_id")?
            .ok_or_else(|| missing("access key id"))?;
        let secret_access_key = self
            .secret(&stored, "secret_access_key")?
            .ok_or_else(|| missing("secret access key"))?;
        let endpoint = stored.setting("endpoint_url");
        let bucket = stored.setting("bucket");
        Ok(AwsSettings {
            conn_id: conn_id.into(),
            connection: AwsConnection {
                access_key_id: access_key_id.expose_secret().to_string(),
                secret_access_key,
                region: stored.setting("region"),
                endpoint_url: (!endpoint.is_empty()).then_some(endpoint),
                path_style: stored.settings.get("path_style") == Some(&Value::Bool(true)),
            },
            bucket: (!bucket.is_empty()).then_some(bucket),
        })
    }

    /// iMednet: lists the studies; S3: checks the default bucket. Failures are an answer, not
    /// an error; their messages are scrubbed of every known secret.
    pub async fn test(&self, conn_id: &str) -> Result<ConnectionTest, ConnectionError> {
        let info = self.get(conn_id).await?;
        let started = Instant::now();
        let outcome: Result<(String, Option<u64>), String> = match info.kind {
            ConnectionKind::Imednet => match self.imednet(conn_id).await.and_then(|s| s.client()) {
                Ok(client) => {
                    match ImednetClient::collect(client.studies(Default::default())).await {
                        Ok(studies) => Ok((
                            format!("Listed {} studies at {}", studies.len(), client.base_url()),
                            Some(studies.len() as u64),
                        )),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            },
            ConnectionKind::Aws => match self.aws(conn_id).await {
                Ok(settings) => match (&settings.bucket, settings.store()) {
                    (None, _) => Err("set a default bucket to test this connection".into()),
                    (_, Err(e)) => Err(e.to_string()),
                    (Some(bucket), Ok(store)) => match store.check_bucket(bucket).await {
                        Ok(()) => Ok((format!("Bucket `{bucket}` is reachable"), None)),
                        Err(e) => Err(e.to_string()),
                    },
                },
                Err(e) => Err(e.to_string()),
            },
            ConnectionKind::Webhook | ConnectionKind::Smtp => self.test_alert_target(conn_id).await,
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(match outcome {
            Ok((message, count)) => ConnectionTest {
                conn_id: conn_id.into(),
                ok: true,
                message,
                latency_ms,
                count,
            },
            Err(message) => ConnectionTest {
                conn_id: conn_id.into(),
                ok: false,
                message: self.known.redact_text(&message),
                latency_ms,
                count: None,
            },
        })
    }

    /// Webhook: posts a signed `test` event; mail server: connects and logs in, sends nothing.
    async fn test_alert_target(&self, conn_id: &str) -> Result<(String, Option<u64>), String> {
        let target = self
            .alert_target(conn_id)
            .await
            .map_err(|e| e.to_string())?;
        let answer = match &target {
            targets::AlertTarget::Smtp(smtp) => smtp.check().await,
            targets::AlertTarget::Webhook(_) => {
                let body = json!({"event": "test", "conn_id": conn_id}).to_string();
                let alert = targets::Alert {
                    delivery_id: 0,
                    event: "test",
                    body: &body,
                    subject: "trialflow test",
                    text: "",
                };
                target
                    .send(&targets::webhook_client(), &alert)
                    .await
                    .map(|answer| format!("The webhook accepted a signed test event ({answer})"))
            }
        };
        answer
            .map(|m| (m, None))
            .map_err(|e| e.message().to_string())
    }

    /// Adds a new active key to the key file and re-encrypts every stored secret with it.
    /// Returns the new key id and how many values were re-encrypted.
    pub async fn rotate_key(&self) -> Result<(String, usize), ConnectionError> {
        let new_id = {
            let mut keys = self
                .keys
                .write()
                .map_err(|_| ConnectionError::invalid("key ring", "lock poisoned"))?;
            keys.rotate()?
        };
        let count = self.reencrypt_all().await?;
        Ok((new_id, count))
    }

    /// Re-encrypts every value not under the active key (after a rotation, or after a new
    /// key was put first in `TRIALFLOW_SECRET_KEY`). Safe against concurrent edits.
    pub async fn reencrypt_all(&self) -> Result<usize, ConnectionError> {
        let mut count = 0;
        for row in self.db.list_connection_rows().await? {
            let old = row.secrets.clone();
            let stored = Stored::decode(row)?;
            let mut changed = false;
            let mut secrets = stored.secrets.clone();
            {
                let keys = self
                    .keys
                    .read()
                    .map_err(|_| ConnectionError::invalid("key ring", "lock poisoned"))?;
                for (field, value) in secrets.iter_mut() {
                    if keys.needs_rotation(value) {
                        *value = keys.reencrypt(value, &stored.conn_id, field)?;
                        changed = true;
                        count += 1;
                    }
                }
            }
            if changed {
                let new = serde_json::to_string(&secrets).unwrap_or_else(|_| old.clone());
                if !self
                    .db
                    .swap_connection_secrets(&stored.conn_id, &old, &new)
                    .await?
                {
                    // Edited meanwhile: the edit encrypted with the active key already.
                    tracing::info!(conn_id = %stored.conn_id, "connection changed during re-encryption; kept the newer value");
                }
            }
        }
        Ok(count)
    }
}

fn validate_conn_id(conn_id: &str) -> Result<(), ConnectionError> {
    let ok = !conn_id.is_empty()
        && conn_id.len() <= 64
        && conn_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConnectionError::invalid(
            "conn_id",
            "use 1 to 64 letters, digits, `_`, `-` or `.`",
        ))
    }
}

fn http_url(field: &str, value: &str) -> Result<(), ConnectionError> {
    if value.is_empty() || value.starts_with("http://") || value.starts_with("https://") {
        Ok(())
    } else {
        Err(ConnectionError::invalid(
            field,
            format!("`{value}` must start with http:// or https://"),
        ))
    }
}

/// Secret fields submitted with a value, by field name.
type GivenSecrets = Vec<(String, SecretString)>;

/// Checks the submitted fields of `kind`; returns the settings to store and the secrets given
/// (trimmed, non-blank).
fn validate_fields(
    kind: ConnectionKind,
    input: &ConnectionInput,
) -> Result<(Map<String, Value>, GivenSecrets), ConnectionError> {
    let mut settings = Map::new();
    let mut secrets: GivenSecrets = Vec::new();
    for f in kind.fields() {
        let raw = input.value(f.name).unwrap_or("");
        let value = raw.trim();
        if f.secret {
            if value.chars().any(char::is_control) {
                return Err(ConnectionError::invalid(
                    f.name,
                    "contains a line break or control character",
                ));
            }
            // The webhook URL is secret: the message must not repeat it.
            if f.name == "url"
                && !value.is_empty()
                && reqwest::Url::parse(value)
                    .map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
            {
                return Err(ConnectionError::invalid(
                    "url",
                    "is not an http:// or https:// URL",
                ));
            }
            if !value.is_empty() {
                secrets.push((f.name.to_string(), SecretString::from(value)));
            }
            continue;
        }
        let stored = match f.name {
            "base_url" | "endpoint_url" => {
                http_url(f.name, value)?;
                json!(value)
            }
            "path_style" => json!(matches!(
                value.to_ascii_lowercase().as_str(),
                "on" | "true" | "1" | "yes"
            )),
            "bucket" => {
                if !value.is_empty() {
                    crate::objstore::parse_s3_url(&format!("s3://{value}/x"))
                        .map_err(|e| ConnectionError::invalid("bucket", e.to_string()))?;
                }
                json!(value)
            }
            "host" => {
                if !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
                {
                    return Err(ConnectionError::invalid(
                        "host",
                        format!("`{value}` is not a host name or address"),
                    ));
                }
                json!(value)
            }
            "port" => {
                if !value.is_empty() && value.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(ConnectionError::invalid(
                        "port",
                        format!("`{value}` is not a port number (1 to 65535)"),
                    ));
                }
                json!(value)
            }
            "security" => {
                targets::SmtpSecurity::parse(value)
                    .map_err(|e| ConnectionError::invalid("security", e))?;
                json!(value.to_ascii_lowercase())
            }
            "from" | "to" => {
                let addresses = targets::parse_mailboxes(value)
                    .map_err(|e| ConnectionError::invalid(f.name, e))?;
                if f.name == "from" && addresses.len() > 1 {
                    return Err(ConnectionError::invalid(
                        "from",
                        "names more than one sender",
                    ));
                }
                json!(value)
            }
            "region" => {
                if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(ConnectionError::invalid(
                        "region",
                        format!("`{value}` is not a region name (like eu-west-1)"),
                    ));
                }
                json!(value)
            }
            "extra" => {
                let extra = parse_extra(value)?;
                let mut options = Map::new();
                for (key, v) in extra {
                    let field = match key.to_ascii_lowercase().as_str() {
                        "api_key" => "api_key",
                        "security_key" => "security_key",
                        _ if is_sensitive_key(&key) => {
                            return Err(ConnectionError::invalid(
                                format!("extra.{key}"),
                                "secrets do not belong in extra; use the secret fields, which are encrypted",
                            ));
                        }
                        _ => {
                            options.insert(key, v);
                            continue;
                        }
                    };
                    // The provider reads keys from extra: they fill a blank secret field.
                    let text = v.as_str().unwrap_or_default().trim().to_string();
                    if !text.is_empty() && !secrets.iter().any(|(n, _)| n == field) {
                        secrets.push((field.to_string(), SecretString::from(text)));
                    }
                }
                apply_imednet_extra(&mut ClientConfig::new("", "", ""), &options)?;
                Value::Object(options)
            }
            _ => json!(value),
        };
        settings.insert(f.name.to_string(), stored);
    }
    Ok((settings, secrets))
}

fn parse_extra(value: &str) -> Result<Map<String, Value>, ConnectionError> {
    if value.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ConnectionError::invalid("extra", "must be a JSON object")),
        // serde_json's message names line and column, never echoes the input.
        Err(e) => Err(ConnectionError::invalid(
            "extra",
            format!("is not valid JSON: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests;
