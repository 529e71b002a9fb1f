//! Alert targets as connections: a webhook (its URL and signing secret are both secret, since
//! chat webhooks carry their token in the URL) and a mail server. Resolved from a stored
//! connection, tested, and sent to; the delivery queue in `crate::alerts` decides when.
use super::{ConnectionError, Connections, Stored};
use crate::secrets::SecretString;
use app::model::ConnectionKind;
use hmac::{Hmac, Mac};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// Longest one webhook call or one SMTP conversation may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

pub const SIGNATURE_HEADER: &str = "X-Trialflow-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Trialflow-Timestamp";
pub const EVENT_HEADER: &str = "X-Trialflow-Event";
pub const DELIVERY_HEADER: &str = "X-Trialflow-Delivery";

/// How a mail server's connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic).
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only for a relay on a trusted network or a local test server.
    None,
}

impl SmtpSecurity {
    pub fn parse(text: &str) -> Result<SmtpSecurity, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "" | "starttls" => Ok(SmtpSecurity::Starttls),
            "tls" | "ssl" | "smtps" => Ok(SmtpSecurity::Tls),
            "none" | "plain" => Ok(SmtpSecurity::None),
            other => Err(format!("`{other}` is not starttls, tls or none")),
        }
    }

    fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

/// Parses a comma-separated list of addresses; names the one that is wrong.
pub fn parse_mailboxes(text: &str) -> Result<Vec<Mailbox>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(
            part.parse::<Mailbox>()
                .map_err(|e| format!("`{part}` is not an email address ({e})"))?,
        );
    }
    Ok(out)
}

pub struct Webhook {
    pub conn_id: String,
    url: SecretString,
    signing_secret: Option<SecretString>,
}

pub struct Smtp {
    pub conn_id: String,
    host: String,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<(String, SecretString)>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

pub enum AlertTarget {
    Webhook(Webhook),
    Smtp(Smtp),
}

/// One notification: the JSON body webhooks receive and the mail rendering of the same news.
pub struct Alert<'a> {
    pub delivery_id: i64,
    pub event: &'a str,
    pub body: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
}

/// Why a send did not go through, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    Retry(String),
    Permanent(String),
}

impl SendError {
    pub fn message(&self) -> &str {
        match self {
            SendError::Retry(m) | SendError::Permanent(m) => m,
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `timestamp.body` under the signing secret.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes keys of any length: the error case cannot happen.
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "sha256={}",
        crate::export::hex(&mac.finalize().into_bytes())
    )
}

impl Connections {
    /// The webhook or mail server behind `conn_id`, with its secrets decrypted.
    pub async fn alert_target(&self, conn_id: &str) -> Result<AlertTarget, ConnectionError> {
        let stored = self
            .load(conn_id)
            .await?
            .ok_or_else(|| ConnectionError::NotFound(conn_id.into()))?;
        let missing = |what| ConnectionError::Missing {
            conn_id: conn_id.into(),
            what,
            hint: "set it on the Connections page",
        };
        match stored.kind {
            ConnectionKind::Webhook => Ok(AlertTarget::Webhook(Webhook {
                conn_id: conn_id.into(),
                url: self.secret(&stored, "url")?.ok_or_else(|| missing("URL"))?,
                signing_secret: self.secret(&stored, "signing_secret")?,
            })),
            ConnectionKind::Smtp => self.smtp(&stored).map(AlertTarget::Smtp),
            other => Err(ConnectionError::invalid(
                "alerts",
                format!(
                    "connection `{conn_id}` is a {other} connection, not a webhook or smtp one"
                ),
            )),
        }
    }

    fn smtp(&self, stored: &Stored) -> Result<Smtp, ConnectionError> {
        let conn_id = &stored.conn_id;
        let invalid = |field: &str, message: String| {
            ConnectionError::invalid(format!("connection {conn_id}: {field}"), message)
        };
        let host = stored.setting("host");
        if host.is_empty() {
            return Err(ConnectionError::Missing {
                conn_id: conn_id.clone(),
                what: "host",
                hint: "set it on the Connections page",
            });
        }
        let security =
            SmtpSecurity::parse(&stored.setting("security")).map_err(|e| invalid("security", e))?;
        let port = match stored.setting("port").as_str() {
            "" => security.default_port(),
            p => p
                .parse()
                .map_err(|_| invalid("port", format!("`{p}` is not a port number")))?,
        };
        let username = stored.setting("username");
        let credentials = match username.is_empty() {
            true => None,
            false => Some((
                username,
                self.secret(stored, "password")?
                    .unwrap_or_else(|| SecretString::from(String::new())),
            )),
        };
        let from = parse_mailboxes(&stored.setting("from")).map_err(|e| invalid("from", e))?;
        let to = parse_mailboxes(&stored.setting("to")).map_err(|e| invalid("to", e))?;
        let Some(from) = from.into_iter().next() else {
            return Err(invalid("from", "is empty".into()));
        };
        if to.is_empty() {
            return Err(invalid("to", "names no recipient".into()));
        }
        Ok(Smtp {
            conn_id: conn_id.clone(),
            host,
            port,
            security,
            credentials,
            from,
            to,
        })
    }
}

/// One HTTP client for all webhook calls: bounded time, no redirects (a redirect could carry
/// the body and signature somewhere the operator did not configure).
pub fn webhook_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("trialflow/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

impl AlertTarget {
    pub fn conn_id(&self) -> &str {
        match self {
            AlertTarget::Webhook(w) => &w.conn_id,
            AlertTarget::Smtp(s) => &s.conn_id,
        }
    }

    /// Sends one alert. Returns what the other side answered, for the delivery record.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        alert: &Alert<'_>,
    ) -> Result<String, SendError> {
        match self {
            AlertTarget::Webhook(w) => w.post(http, alert).await,
            AlertTarget::Smtp(s) => s.send(alert).await,
        }
    }
}

impl Webhook {
    async fn post(&self, http: &reqwest::Client, alert: &Alert<'_>) -> Result<String, SendError> {
        let timestamp = chrono::Utc::now().timestamp();
        let mut request = http
            .post(self.url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, alert.event)
            .header(DELIVERY_HEADER, alert.delivery_id.to_string())
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .body(alert.body.to_string());
        if let Some(secret) = &self.signing_secret {
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret.expose_secret(), timestamp, alert.body),
            );
        }
        // The URL is a secret: errors are reported without it.
        let response = request.send().await.map_err(|e| {
            let e = e.without_url();
            match e.is_builder() {
                true => SendError::Permanent(format!("the webhook URL is not usable: {e}")),
                false => SendError::Retry(format!("webhook not reached: {e}")),
            }
        })?;
        let status = response.status();
        let answer = format!("HTTP {}", status.as_u16());
        if status.is_success() {
            return Ok(answer);
        }
        // Timeouts, throttling and server errors pass; other refusals will not change by
        // sending the same body again.
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT;
        match transient {
            true => Err(SendError::Retry(format!("webhook answered {answer}"))),
            false => Err(SendError::Permanent(format!(
                "webhook answered {answer} (not retried)"
            ))),
        }
    }
}

impl Smtp {
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
        let builder = match self.security {
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.host)
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&self.host),
            SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &self.host,
            )),
        }
        .map_err(|e| SendError::Permanent(format!("mail server `{}`: {e}", self.host)))?;
        let mut builder = builder.port(self.port).timeout(Some(SEND_TIMEOUT));
        if let Some((user, password)) = &self.credentials {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(builder.build())
    }

    async fn send(&self, alert: &Alert<'_>) -> Result<String, SendError> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(alert.subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(alert.text.to_string())
            .map_err(|e| SendError::Permanent(format!("the message cannot be built: {e}")))?;
        let response = self.transport()?.send(message).await.map_err(|e| {
            let text = format!("mail server {}:{}: {e}", self.host, self.port);
            match e.is_permanent() {
                true => SendError::Permanent(text),
                false => SendError::Retry(text),
            }
        })?;
        Ok(format!("SMTP {}", response.code()))
    }

    /// Connects, greets and says goodbye: proves host, port, TLS and login without mail.
    pub async fn check(&self) -> Result<String, SendError> {
        match self.transport()?.test_connection().await {
            Ok(true) => Ok(format!(
                "Mail server {}:{} accepted the connection",
                self.host, self.port
            )),
            Ok(false) => Err(SendError::Retry(format!(
                "mail server {}:{} did not answer",
                self.host, self.port
            ))),
            Err(e) => Err(SendError::Retry(format!(
                "mail server {}:{}: {e}",
                self.host, self.port
            ))),
        }
    }
}
