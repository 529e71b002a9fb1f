//! Data shapes shared by the server and the browser.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

mod console;
mod flows;
pub use console::*;
pub use flows::*;

/// Roles with Airflow's meanings; each one includes everything the roles before it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything that is not a secret.
    Viewer,
    /// Also triggers, clears, marks and cancels runs.
    User,
    /// Also manages connections and pools.
    Op,
    /// Also manages users.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::User, Role::Op, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Op => "op",
            Role::Admin => "admin",
        }
    }

    /// Whether a holder of `self` may do what `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Ok(Role::Viewer),
            "user" => Ok(Role::User),
            "op" => Ok(Role::Op),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role '{other}': expected one of viewer, user, op, admin"
            )),
        }
    }
}

/// The signed-in user, as the server resolved it for this request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

/// What the authentication middleware learned about a request; read by pages and server functions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthContext {
    pub user: Option<CurrentUser>,
    /// The request carried a session cookie that no longer names a live session.
    pub session_expired: bool,
}

/// A user as the Users page shows it. Never carries the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// What `/healthz` and the dashboard report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub database: DatabaseHealth,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseHealth {
    pub backend: String,
    pub ok: bool,
    pub latency_ms: u64,
    pub error: Option<String>,
}

/// Outcome of an admin's password reset: the new password is shown exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordReset {
    pub username: String,
    pub one_time_password: Option<String>,
}

/// The kinds of connection and the fields each one has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// The iMednet EDC REST API.
    Imednet,
    /// S3 or an S3-compatible object store.
    Aws,
    /// An alert target: an HTTP endpoint that receives signed JSON.
    Webhook,
    /// An alert target: a mail server and the addresses to write to.
    Smtp,
}

/// One input of a connection form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionField {
    pub name: &'static str,
    pub label: &'static str,
    /// Encrypted at rest, write-only in the UI, shown as `***`.
    pub secret: bool,
    /// A checkbox instead of a text input.
    pub flag: bool,
    pub hint: &'static str,
}

const fn field(name: &'static str, label: &'static str, hint: &'static str) -> ConnectionField {
    ConnectionField {
        name,
        label,
        secret: false,
        flag: false,
        hint,
    }
}

const fn secret(name: &'static str, label: &'static str, hint: &'static str) -> ConnectionField {
    ConnectionField {
        name,
        label,
        secret: true,
        flag: false,
        hint,
    }
}

const IMEDNET_FIELDS: &[ConnectionField] = &[
    field(
        "base_url",
        "Base URL",
        "Blank: IMEDNET_BASE_URL, else https://edc.prod.imednetapi.com",
    ),
    secret("api_key", "API key", "Blank: IMEDNET_API_KEY"),
    secret(
        "security_key",
        "Security key",
        "Blank: IMEDNET_SECURITY_KEY",
    ),
    field(
        "extra",
        "Extra (JSON)",
        "Client options, e.g. {\"timeout_seconds\": 60, \"requests_per_second\": 5}",
    ),
];

const AWS_FIELDS: &[ConnectionField] = &[
    secret("access_key_id", "Access key id", ""),
    secret("secret_access_key", "Secret access key", ""),
    field("region", "Region", "Blank: us-east-1"),
    field(
        "endpoint_url",
        "Endpoint URL",
        "For S3-compatible servers (MinIO, Ceph); blank for AWS",
    ),
    ConnectionField {
        name: "path_style",
        label: "Path-style addressing",
        secret: false,
        flag: true,
        hint: "Needed by most S3-compatible servers",
    },
    field(
        "bucket",
        "Default bucket",
        "Checked by \"Test\"; used when a task names no bucket",
    ),
];

const WEBHOOK_FIELDS: &[ConnectionField] = &[
    secret(
        "url",
        "URL",
        "Where alerts are POSTed; kept secret, as chat webhooks carry their token in the URL",
    ),
    secret(
        "signing_secret",
        "Signing secret",
        "Signs each body: X-Trialflow-Signature: sha256=HMAC(secret, timestamp.body)",
    ),
];

const SMTP_FIELDS: &[ConnectionField] = &[
    field("host", "Host", "The mail server, e.g. smtp.example.org"),
    field(
        "port",
        "Port",
        "Blank: 587 for starttls, 465 for tls, 25 for none",
    ),
    field("security", "Security", "starttls (blank), tls or none"),
    field("username", "Username", "Blank: no authentication"),
    secret("password", "Password", ""),
    field(
        "from",
        "From",
        "The sender address, e.g. trialflow@example.org",
    ),
    field("to", "To", "Recipients, separated by commas"),
];

impl ConnectionKind {
    pub const ALL: [ConnectionKind; 4] = [
        ConnectionKind::Imednet,
        ConnectionKind::Aws,
        ConnectionKind::Webhook,
        ConnectionKind::Smtp,
    ];

    /// Kinds that pipelines name as alert targets.
    pub fn is_alert_target(self) -> bool {
        matches!(self, ConnectionKind::Webhook | ConnectionKind::Smtp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Imednet => "imednet",
            ConnectionKind::Aws => "aws",
            ConnectionKind::Webhook => "webhook",
            ConnectionKind::Smtp => "smtp",
        }
    }

    /// The id operators use when a task names no connection.
    pub fn default_id(self) -> &'static str {
        match self {
            ConnectionKind::Imednet => "imednet_default",
            ConnectionKind::Aws => "aws_default",
            ConnectionKind::Webhook => "webhook_default",
            ConnectionKind::Smtp => "smtp_default",
        }
    }

    pub fn fields(self) -> &'static [ConnectionField] {
        match self {
            ConnectionKind::Imednet => IMEDNET_FIELDS,
            ConnectionKind::Aws => AWS_FIELDS,
            ConnectionKind::Webhook => WEBHOOK_FIELDS,
            ConnectionKind::Smtp => SMTP_FIELDS,
        }
    }

    pub fn field(self, name: &str) -> Option<&'static ConnectionField> {
        self.fields().iter().find(|f| f.name == name)
    }
}

impl fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConnectionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "imednet" => Ok(ConnectionKind::Imednet),
            "aws" | "s3" => Ok(ConnectionKind::Aws),
            "webhook" => Ok(ConnectionKind::Webhook),
            "smtp" | "email" => Ok(ConnectionKind::Smtp),
            other => Err(format!(
                "unknown connection kind '{other}': expected imednet, aws, webhook or smtp"
            )),
        }
    }
}

/// Whether a secret field has a value, and where it comes from. Never the value itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretStatus {
    pub field: String,
    pub configured: bool,
    /// `connection`, `env` (a fallback variable) or `missing`.
    pub source: String,
}

/// A connection as the Connections page shows it: settings in clear, secrets as `***` flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub conn_id: String,
    pub kind: ConnectionKind,
    pub description: String,
    /// Non-secret fields in the kind's field order; absent ones are blank.
    pub settings: Vec<(String, String)>,
    pub secrets: Vec<SecretStatus>,
    pub updated_at: i64,
    pub updated_by: String,
}

impl ConnectionInfo {
    pub fn setting(&self, name: &str) -> &str {
        self.settings
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// A create or edit form. Secret fields left blank keep the stored value; `clear` lists the
/// secret fields to erase instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionInput {
    pub conn_id: String,
    pub kind: String,
    /// `true` when creating: an existing id is then an error instead of an edit.
    pub create: bool,
    pub description: String,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub security_key: Option<String>,
    pub extra: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub path_style: Option<String>,
    pub bucket: Option<String>,
    pub url: Option<String>,
    pub signing_secret: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub security: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub clear: Vec<String>,
}

impl ConnectionInput {
    /// The submitted value of a field by name (`None` when the form did not send it).
    pub fn value(&self, name: &str) -> Option<&str> {
        match name {
            "base_url" => self.base_url.as_deref(),
            "api_key" => self.api_key.as_deref(),
            "security_key" => self.security_key.as_deref(),
            "extra" => self.extra.as_deref(),
            "access_key_id" => self.access_key_id.as_deref(),
            "secret_access_key" => self.secret_access_key.as_deref(),
            "region" => self.region.as_deref(),
            "endpoint_url" => self.endpoint_url.as_deref(),
            "path_style" => self.path_style.as_deref(),
            "bucket" => self.bucket.as_deref(),
            "url" => self.url.as_deref(),
            "signing_secret" => self.signing_secret.as_deref(),
            "host" => self.host.as_deref(),
            "port" => self.port.as_deref(),
            "security" => self.security.as_deref(),
            "username" => self.username.as_deref(),
            "password" => self.password.as_deref(),
            "from" => self.from.as_deref(),
            "to" => self.to.as_deref(),
            _ => None,
        }
    }
}

/// Outcome of "Test connection".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionTest {
    pub conn_id: String,
    pub ok: bool,
    pub message: String,
    pub latency_ms: u64,
    /// Studies listed (iMednet).
    pub count: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_field_reaches_the_server_by_its_name() {
        for kind in ConnectionKind::ALL {
            for f in kind.fields() {
                let mut form = serde_json::Map::new();
                form.insert(f.name.into(), "v".into());
                let input: ConnectionInput =
                    serde_json::from_value(form.into()).expect("form decodes");
                assert_eq!(input.value(f.name), Some("v"), "{kind}.{}", f.name);
            }
            assert_eq!(kind.as_str().parse::<ConnectionKind>(), Ok(kind));
        }
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Admin.allows(Role::Op));
        assert!(Role::Op.allows(Role::User));
        assert!(Role::User.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::User));
        assert!(!Role::Op.allows(Role::Admin));
    }

    #[test]
    fn role_parsing_names_the_bad_value() {
        assert_eq!("Admin".parse::<Role>(), Ok(Role::Admin));
        let err = "root".parse::<Role>().unwrap_err();
        assert!(err.contains("'root'"), "{err}");
    }
}
