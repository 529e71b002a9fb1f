//! Secrets at rest and secret hygiene.
//!
//! - [`KeyRing`] encrypts connection secrets with AES-256-GCM before they reach the database
//!   (stored form `tf1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`, see [`keyring`]).
//! - [`SecretString`] holds a decrypted value; it prints as `***` and is wiped on drop.
//! - [`redact`] masks secrets in JSON (by key name) and in free text (by value).

pub mod keyring;
pub mod redact;

pub use keyring::{KEY_ENV_VAR, KEY_FILE_NAME, KeyRing};
pub use redact::{MASK, is_sensitive_key, redact_json, redact_text};

use std::fmt;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// A plaintext secret in memory. Debug and Display print `***`; the buffer is zeroed on drop.
///
/// Read it with [`SecretString::expose_secret`] only where the value is really needed
/// (building a request), so accidental `{:?}` in logs and errors cannot leak it.
#[derive(Clone, Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(value: String) -> Self {
        SecretString(Zeroizing::new(value))
    }

    /// The plaintext. Keep the borrow short and never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// True when no secret is set (blank form field = "keep the stored value").
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        SecretString::new(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        SecretString::new(value.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Errors of the key ring. None of them carries key material or plaintext: messages name
/// files, key ids, connection ids and field names only.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{KEY_ENV_VAR} is invalid: {0}")]
    InvalidEnvKey(String),
    #[error("key file {} is invalid: {reason}", path.display())]
    InvalidKeyFile { path: PathBuf, reason: String },
    #[error(
        "key file {} is readable or writable by group/others (mode {mode:03o}); \
         refusing to use it. Run `chmod 600 {}` and check who could have read it",
        path.display(),
        path.display()
    )]
    InsecureKeyFile { path: PathBuf, mode: u32 },
    #[error("key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stored secret is not a trialflow encrypted value: {0}")]
    Malformed(&'static str),
    #[error("stored secret was encrypted with key id `{0}`, which is not in the key ring")]
    UnknownKey(String),
    #[error(
        "secret for connection `{conn_id}` field `{field}` failed to decrypt: wrong key, \
         tampered value, or a value copied from another connection or field"
    )]
    DecryptFailed { conn_id: String, field: String },
    #[error("secret for connection `{conn_id}` field `{field}` is not valid UTF-8")]
    NotUtf8 { conn_id: String, field: String },
    #[error("encrypting the secret for connection `{conn_id}` field `{field}` failed")]
    EncryptFailed { conn_id: String, field: String },
    #[error(
        "keys come from {KEY_ENV_VAR}; rotate by putting a new `id:key` entry first in the \
         list and keeping the old entries until every value is re-encrypted"
    )]
    RotationUnsupported,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_never_prints_its_value() {
        let s = SecretString::from("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(s.expose_secret(), "hunter2-very-secret");
        assert!(!s.is_empty());
        assert!(SecretString::default().is_empty());
    }
}
