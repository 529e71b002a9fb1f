//! Master keys and AEAD encryption of connection secrets.
//!
//! Stored value: `tf1:<key id>:<base64url, no padding, of nonce(12) ‖ ciphertext ‖ tag(16)>`.
//! The associated data binds the format version, key id, connection id and field name, so a
//! value copied to another connection or field (or relabelled with another key id) fails to
//! decrypt instead of silently yielding someone else's password.
//!
//! Key sources, in order:
//! 1. env `TRIALFLOW_SECRET_KEY`: either one key (64 hex chars or base64 of 32 bytes; its id is
//!    `default`) or a comma-separated list `id1:key1,id2:key2` whose first entry is active.
//! 2. file `<data dir>/secret.key`, created at first start with mode 0600; one `id:base64key`
//!    per line, first line active, `#` comments allowed. A group/world-accessible file is refused.
//!
//! The key never goes into the database. [`KeyRing::rotate`] adds a new active key to the file
//! and keeps the old ones so existing values still decrypt; the caller then re-encrypts the
//! stored values with [`KeyRing::reencrypt`] for every value where [`KeyRing::needs_rotation`].

use super::{SecretError, SecretString};
use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Environment variable holding the master key(s).
pub const KEY_ENV_VAR: &str = "TRIALFLOW_SECRET_KEY";
/// Key file name inside the data directory.
pub const KEY_FILE_NAME: &str = "secret.key";
/// Id given to a single key from the environment written without `id:`.
pub const DEFAULT_ENV_KEY_ID: &str = "default";

const FORMAT_PREFIX: &str = "tf1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const MAX_KEY_ID_LEN: usize = 32;

struct MasterKey {
    id: String,
    // Raw bytes are kept (zeroed on drop) only to write the key file on rotation.
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl MasterKey {
    fn new(id: String, bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let cipher = Aes256Gcm::new((&*bytes).into());
        MasterKey { id, bytes, cipher }
    }

    fn generate(existing: &[MasterKey]) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut_slice());
        // Random ids: a key file recreated after loss can't reuse an id of a lost key.
        let id = loop {
            let mut raw = [0u8; 4];
            OsRng.fill_bytes(&mut raw);
            let id = format!("k{:08x}", u32::from_be_bytes(raw));
            if !existing.iter().any(|k| k.id == id) {
                break id;
            }
        };
        MasterKey::new(id, bytes)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySource {
    Env,
    File(PathBuf),
}

/// One active key (used for encryption) plus older keys (decryption only), by id.
pub struct KeyRing {
    /// `keys[0]` is the active key.
    keys: Vec<MasterKey>,
    source: KeySource,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("active", &self.active_key_id())
            .field("key_ids", &self.key_ids())
            .field("source", &self.source)
            .finish()
    }
}

impl KeyRing {
    /// Keys from `TRIALFLOW_SECRET_KEY` when set and non-blank, else from
    /// `<data_dir>/secret.key`, creating the directory and file (0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<KeyRing, SecretError> {
        let env = std::env::var(KEY_ENV_VAR).ok().map(Zeroizing::new);
        Self::load_or_create_with(data_dir, env.as_deref().map(String::as_str))
    }

    /// [`KeyRing::load_or_create`] with the environment value passed in (tests, embedding).
    pub fn load_or_create_with(
        data_dir: &Path,
        env_value: Option<&str>,
    ) -> Result<KeyRing, SecretError> {
        if let Some(value) = env_value.filter(|v| !v.trim().is_empty()) {
            return Self::from_env_value(value);
        }
        let path = data_dir.join(KEY_FILE_NAME);
        match Self::from_key_file(&path) {
            Err(SecretError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Self::create_key_file(data_dir, &path)
            }
            other => other,
        }
    }

    /// Parses the `TRIALFLOW_SECRET_KEY` format (one key, or `id:key,id:key`, first active).
    pub fn from_env_value(value: &str) -> Result<KeyRing, SecretError> {
        let value = value.trim();
        let keys = if value.contains(':') || value.contains(',') {
            parse_key_list(value.split(','), "entry")
        } else {
            decode_key(value).map(|bytes| vec![MasterKey::new(DEFAULT_ENV_KEY_ID.into(), bytes)])
        }
        .map_err(SecretError::InvalidEnvKey)?;
        Ok(KeyRing {
            keys,
            source: KeySource::Env,
        })
    }

    /// Loads an existing key file, refusing one that group or others can access.
    pub fn from_key_file(path: &Path) -> Result<KeyRing, SecretError> {
        let io_err = |source| SecretError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        if !meta.is_file() {
            return Err(SecretError::InvalidKeyFile {
                path: path.to_path_buf(),
                reason: "not a regular file".into(),
            });
        }
        check_private_mode(path, &meta)?;
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err)?);
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let keys = parse_key_list(lines, "line").map_err(|reason| SecretError::InvalidKeyFile {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(KeyRing {
            keys,
            source: KeySource::File(path.to_path_buf()),
        })
    }

    fn create_key_file(data_dir: &Path, path: &Path) -> Result<KeyRing, SecretError> {
        create_private_dir(data_dir)?;
        let ring = KeyRing {
            keys: vec![MasterKey::generate(&[])],
            source: KeySource::File(path.to_path_buf()),
        };
        let tmp = ring.write_temp_key_file(path)?;
        // hard_link fails if the file exists, so two processes starting at once can't both
        // create a key: the loser drops its key and loads the winner's.
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(path);
                tracing::info!(path = %path.display(), key_id = ring.active_key_id(), "created secret key file");
                Ok(ring)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::from_key_file(path),
            Err(source) => Err(SecretError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Id of the key new values are encrypted with.
    pub fn active_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// All key ids, active first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Encrypts `plaintext` for (`conn_id`, `field`) with the active key and a fresh random nonce.
    ///
    /// `conn_id` must be the connection's immutable identity: renaming it makes the value
    /// undecryptable (re-encrypt on rename).
    pub fn encrypt(
        &self,
        plaintext: &str,
        conn_id: &str,
        field: &str,
    ) -> Result<String, SecretError> {
        let key = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(&key.id, conn_id, field);
        let ciphertext = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SecretError::EncryptFailed {
                conn_id: conn_id.into(),
                field: field.into(),
            })?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(format!(
            "{FORMAT_PREFIX}:{}:{}",
            key.id,
            URL_SAFE_NO_PAD.encode(blob)
        ))
    }

    /// Decrypts a stored value for (`conn_id`, `field`).
    pub fn decrypt(
        &self,
        stored: &str,
        conn_id: &str,
        field: &str,
    ) -> Result<SecretString, SecretError> {
        let (key_id, blob) = parse_stored(stored)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| SecretError::UnknownKey(key_id.into()))?;
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let aad = associated_data(key_id, conn_id, field);
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SecretError::DecryptFailed {
                conn_id: conn_id.into(),
                field: field.into(),
            })?;
        let text = std::str::from_utf8(&plain).map_err(|_| SecretError::NotUtf8 {
            conn_id: conn_id.into(),
            field: field.into(),
        })?;
        Ok(SecretString::from(text))
    }

    /// True when `stored` is not encrypted with the active key (older key, or not a `tf1` value,
    /// in which case [`KeyRing::reencrypt`] reports why).
    pub fn needs_rotation(&self, stored: &str) -> bool {
        parse_stored(stored).map_or(true, |(id, _)| id != self.active_key_id())
    }

    /// Decrypts with whichever key `stored` names and encrypts again with the active key.
    pub fn reencrypt(
        &self,
        stored: &str,
        conn_id: &str,
        field: &str,
    ) -> Result<String, SecretError> {
        let plain = self.decrypt(stored, conn_id, field)?;
        self.encrypt(plain.expose_secret(), conn_id, field)
    }

    /// Generates a new active key, keeps the old ones for decryption and rewrites the key file
    /// atomically. Returns the new key id. Keys from the environment can't be rotated here.
    pub fn rotate(&mut self) -> Result<String, SecretError> {
        let KeySource::File(path) = &self.source else {
            return Err(SecretError::RotationUnsupported);
        };
        let path = path.clone();
        // Another process (a CLI rotation) may have added keys since we loaded: keep them all.
        if let Ok(on_disk) = Self::from_key_file(&path) {
            for key in on_disk.keys {
                if !self.keys.iter().any(|k| k.id == key.id) {
                    self.keys.push(key);
                }
            }
        }
        let new_key = MasterKey::generate(&self.keys);
        let id = new_key.id.clone();
        self.keys.insert(0, new_key);
        // Persist before anything is encrypted with the new key; undo on failure.
        let persisted = self.write_temp_key_file(&path).and_then(|tmp| {
            fs::rename(&tmp, &path).map_err(|source| {
                let _ = fs::remove_file(&tmp);
                SecretError::Io {
                    path: path.clone(),
                    source,
                }
            })
        });
        if let Err(e) = persisted {
            self.keys.remove(0);
            return Err(e);
        }
        sync_dir(&path);
        tracing::info!(key_id = %id, old_keys = self.keys.len() - 1, "rotated secret key");
        Ok(id)
    }

    /// Re-reads the key file (after a rotation by another process, e.g. the CLI, so a running
    /// server can decrypt values re-encrypted with the new key). No-op for env keys.
    pub fn reload(&mut self) -> Result<(), SecretError> {
        if let KeySource::File(path) = &self.source {
            *self = Self::from_key_file(path)?;
        }
        Ok(())
    }

    /// Writes all keys to a new 0600 temp file next to `path`, synced; returns its path.
    fn write_temp_key_file(&self, path: &Path) -> Result<PathBuf, SecretError> {
        let mut suffix = [0u8; 6];
        OsRng.fill_bytes(&mut suffix);
        let tmp = path.with_extension(format!("key.tmp-{}", URL_SAFE_NO_PAD.encode(suffix)));
        let io_err = |source| SecretError::Io {
            path: tmp.clone(),
            source,
        };
        let mut contents = Zeroizing::new(String::from(
            "# trialflow secret keys: `id:base64`, the first line is the active key.\n\
             # Keep this file private (mode 0600) and backed up: without it stored secrets are lost.\n",
        ));
        for key in &self.keys {
            contents.push_str(&key.id);
            contents.push(':');
            contents.push_str(&Zeroizing::new(STANDARD.encode(key.bytes.as_slice())));
            contents.push('\n');
        }
        let mut file = create_private_file(&tmp).map_err(io_err)?;
        let written = file
            .write_all(contents.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(source));
        }
        Ok(tmp)
    }
}

/// Associated data: version, key id, connection id and field, each length-prefixed so that
/// ("ab", "c") and ("a", "bc") differ.
fn associated_data(key_id: &str, conn_id: &str, field: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + key_id.len() + conn_id.len() + field.len());
    aad.extend_from_slice(b"trialflow-secret:");
    aad.extend_from_slice(FORMAT_PREFIX.as_bytes());
    for part in [key_id, conn_id, field] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Splits `tf1:<id>:<b64>` into the key id and decoded nonce‖ciphertext.
fn parse_stored(stored: &str) -> Result<(&str, Vec<u8>), SecretError> {
    let mut parts = stored.trim().splitn(3, ':');
    if parts.next() != Some(FORMAT_PREFIX) {
        return Err(SecretError::Malformed("missing `tf1:` prefix"));
    }
    let key_id = parts
        .next()
        .filter(|id| valid_key_id(id))
        .ok_or(SecretError::Malformed("missing or invalid key id"))?;
    let blob = parts
        .next()
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .ok_or(SecretError::Malformed("payload is not base64url"))?;
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(SecretError::Malformed("payload too short"));
    }
    Ok((key_id, blob))
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Parses `id:key` entries (first active). `what` names an entry in messages ("entry", "line").
fn parse_key_list<'a>(
    entries: impl Iterator<Item = &'a str>,
    what: &str,
) -> Result<Vec<MasterKey>, String> {
    let mut keys: Vec<MasterKey> = Vec::new();
    for (n, entry) in entries.enumerate() {
        let n = n + 1;
        let (id, key) = entry
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{what} {n} is not `id:key`"))?;
        let id = id.trim();
        if !valid_key_id(id) {
            return Err(format!(
                "{what} {n}: key id must be 1-{MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 _ - ."
            ));
        }
        if keys.iter().any(|k| k.id == id) {
            return Err(format!("{what} {n}: duplicate key id `{id}`"));
        }
        let bytes = decode_key(key).map_err(|e| format!("{what} {n} (key id `{id}`): {e}"))?;
        keys.push(MasterKey::new(id.to_owned(), bytes));
    }
    if keys.is_empty() {
        return Err("no keys".into());
    }
    Ok(keys)
}

/// 64 hex characters or base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
/// Messages describe the shape only, never the key.
fn decode_key(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, String> {
    let text = text.trim();
    let decoded: Zeroizing<Vec<u8>> =
        if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Zeroizing::new(decode_hex(text))
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
                .map(Zeroizing::new)
                .ok_or_else(|| "key is neither 64 hex characters nor base64".to_string())?
        };
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if decoded.len() != KEY_LEN {
        return Err(format!(
            "key must be {KEY_LEN} bytes, got {} (generate one with `openssl rand -base64 32`)",
            decoded.len()
        ));
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}

/// Caller checked the input is an even number of ASCII hex digits.
fn decode_hex(text: &str) -> Vec<u8> {
    let nibble = |b: u8| match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| (nibble(pair[0]) << 4) | nibble(pair[1]))
        .collect()
}

#[cfg(unix)]
fn check_private_mode(path: &Path, meta: &fs::Metadata) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::InsecureKeyFile {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path, _meta: &fs::Metadata) -> Result<(), SecretError> {
    // No POSIX modes: rely on the data directory's ACLs.
    Ok(())
}

fn create_private_file(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn create_private_dir(dir: &Path) -> Result<(), SecretError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| SecretError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Makes a rename/link durable. Best effort: some filesystems can't fsync directories.
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests;
