//! File references passed between flows, the file types they name, and the filesystems that turn
//! a reference's filename into a place to read or write.
//!
//! Every filesystem keeps files inside its own area: `..` is refused outright, absolute names must
//! lie inside the area, and on disk the nearest existing part of the path is canonicalized so a
//! symbolic link cannot lead outside.
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use super::results::describe;

/// What a load-file or save-file task passes along instead of the content.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub filename: String,
    pub file_type_string: String,
    pub filesystem_identifier: String,
}

impl FileRef {
    pub fn new(filename: &str, file_type: FileType, filesystem_identifier: &str) -> Self {
        FileRef {
            filename: filename.to_string(),
            file_type_string: file_type.type_string().to_string(),
            filesystem_identifier: filesystem_identifier.to_string(),
        }
    }

    pub fn file_type(&self) -> Result<FileType, FileError> {
        FileType::parse(&self.file_type_string)
    }
}

/// How a file's bytes become a JSON value and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// UTF-8 text ↔ a JSON string.
    Text,
    Json,
    Yaml,
    /// Any bytes ↔ a base64 string (standard alphabet, padded), so the content survives a trip
    /// through JSON results and can be written back unchanged.
    Binary,
}

impl FileType {
    pub const ALL: [FileType; 4] = [
        FileType::Text,
        FileType::Json,
        FileType::Yaml,
        FileType::Binary,
    ];

    /// `trialflow:File[Text]` and so on: the project's name, then the type, as upstream's
    /// `module:File[Serializer]` strings name theirs.
    pub fn type_string(self) -> &'static str {
        match self {
            FileType::Text => "trialflow:File[Text]",
            FileType::Json => "trialflow:File[Json]",
            FileType::Yaml => "trialflow:File[Yaml]",
            FileType::Binary => "trialflow:File[Binary]",
        }
    }

    /// Exact match only: a near miss is an error, never a guess.
    pub fn parse(type_string: &str) -> Result<Self, FileError> {
        Self::ALL
            .into_iter()
            .find(|t| t.type_string() == type_string)
            .ok_or_else(|| FileError::UnknownType {
                found: type_string.to_string(),
            })
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("unknown file type '{found}'; use one of {}", known_types())]
    UnknownType { found: String },
    #[error("unknown filesystem '{id}'; configured: {}", list_or_none(known))]
    UnknownFilesystem { id: String, known: Vec<String> },
    #[error("path '{path}' names no file inside {place}")]
    NoFile { path: String, place: String },
    #[error("path '{path}' uses '..'; name files inside {place} directly")]
    ParentDir { path: String, place: String },
    #[error("path '{path}' is outside {place}")]
    Outside { path: String, place: String },
    #[error("path '{path}' leads through a symbolic link to {target}, outside {place}")]
    SymlinkEscape {
        path: String,
        target: String,
        place: String,
    },
    #[error("path '{path}' is a symbolic link to nothing; refused because writing would follow it")]
    DanglingLink { path: String },
    #[error("cannot check path '{path}': {message}")]
    Io { path: String, message: String },
    #[error("cannot read a {file_type} file: {message}")]
    Decode {
        file_type: FileType,
        message: String,
    },
    #[error("cannot write a {file_type} file: {message}")]
    Encode {
        file_type: FileType,
        message: String,
    },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn known_types() -> String {
    FileType::ALL.map(FileType::type_string).join(", ")
}

/// Where a file reference's name points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filesystem {
    /// Names are relative to `root`, or absolute inside it.
    Local { root: PathBuf },
    /// Names start with `alias` (the path a flow sees) and live under `host_path` (the real one),
    /// as a container mount would map them.
    Mounted { host_path: PathBuf, alias: PathBuf },
    /// Names are keys under `prefix`, or `s3://bucket/key` URIs inside it.
    S3 { bucket: String, prefix: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Path(PathBuf),
    S3 { bucket: String, key: String },
}

impl Filesystem {
    pub fn resolve(&self, filename: &str) -> Result<Resolved, FileError> {
        match self {
            Filesystem::Local { root } => {
                let place = format!("root '{}'", root.display());
                let inside = inside(filename, root, false, &place)?;
                let full = root.join(inside);
                contain(filename, root, &full, &place)?;
                Ok(Resolved::Path(full))
            }
            Filesystem::Mounted { host_path, alias } => {
                let place = format!(
                    "mount '{}' (host '{}')",
                    alias.display(),
                    host_path.display()
                );
                let inside = inside(filename, alias, true, &place)?;
                let full = host_path.join(inside);
                contain(filename, host_path, &full, &place)?;
                Ok(Resolved::Path(full))
            }
            Filesystem::S3 { bucket, prefix } => resolve_s3(bucket, prefix, filename),
        }
    }
}

/// The part of `filename` below `base`. Names must start with `base` when `under_base` (a mount's
/// alias) or when absolute; relative names are otherwise taken as they are. Compared by whole
/// components, so `/data` does not contain `/database`.
fn inside(
    filename: &str,
    base: &Path,
    under_base: bool,
    place: &str,
) -> Result<PathBuf, FileError> {
    let path = Path::new(filename);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(FileError::ParentDir {
            path: filename.to_string(),
            place: place.to_string(),
        });
    }
    let rest = if under_base || path.is_absolute() {
        path.strip_prefix(base).map_err(|_| FileError::Outside {
            path: filename.to_string(),
            place: place.to_string(),
        })?
    } else {
        path
    };
    let rest: PathBuf = rest
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if rest.as_os_str().is_empty() {
        return Err(FileError::NoFile {
            path: filename.to_string(),
            place: place.to_string(),
        });
    }
    Ok(rest)
}

/// Follows links on disk: the nearest existing part of `full` must canonicalize inside `root`.
/// Checking the nearest existing ancestor (not only the file) also covers files about to be
/// written under a linked directory. A root that does not exist yet has nothing to follow.
fn contain(filename: &str, root: &Path, full: &Path, place: &str) -> Result<(), FileError> {
    let io = |e: std::io::Error| FileError::Io {
        path: filename.to_string(),
        message: e.to_string(),
    };
    let root = match root.canonicalize() {
        Ok(root) => root,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let mut probe = full;
    loop {
        match probe.symlink_metadata() {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => match probe.parent() {
                Some(parent) => probe = parent,
                None => return Ok(()),
            },
            Err(e) => return Err(io(e)),
        }
    }
    match probe.canonicalize() {
        Ok(target) if target.starts_with(&root) => Ok(()),
        Ok(target) => Err(FileError::SymlinkEscape {
            path: filename.to_string(),
            target: target.display().to_string(),
            place: place.to_string(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(FileError::DanglingLink {
            path: filename.to_string(),
        }),
        Err(e) => Err(io(e)),
    }
}

fn resolve_s3(bucket: &str, prefix: &str, filename: &str) -> Result<Resolved, FileError> {
    let prefix: Vec<&str> = segments(prefix).collect();
    let place = format!("s3://{bucket}/{}", prefix.join("/"));
    let refuse_outside = || FileError::Outside {
        path: filename.to_string(),
        place: place.clone(),
    };
    let (names, relative) = match filename.strip_prefix("s3://") {
        Some(uri) => {
            let (b, key) = uri.split_once('/').unwrap_or((uri, ""));
            if b != bucket {
                return Err(refuse_outside());
            }
            (key, false)
        }
        None => (filename, true),
    };
    let mut key: Vec<&str> = segments(names).collect();
    if key.contains(&"..") {
        return Err(FileError::ParentDir {
            path: filename.to_string(),
            place,
        });
    }
    if relative {
        key.splice(0..0, prefix.iter().copied());
    } else if !key.starts_with(&prefix) {
        return Err(refuse_outside());
    }
    if key.len() == prefix.len() {
        return Err(FileError::NoFile {
            path: filename.to_string(),
            place,
        });
    }
    Ok(Resolved::S3 {
        bucket: bucket.to_string(),
        key: key.join("/"),
    })
}

/// Key segments without empty and `.` ones, so `a//./b` and `a/b` name the same object.
fn segments(key: &str) -> impl Iterator<Item = &str> {
    key.split('/').filter(|s| !s.is_empty() && *s != ".")
}

/// Parses a configured filesystem: `ID=local:/path`, `ID=mounted:/host/path:/alias` or
/// `ID=s3:bucket/prefix`. The error names the entry and the accepted forms.
pub fn parse_filesystem(entry: &str) -> Result<(String, Filesystem), String> {
    let forms = "expected ID=local:/path, ID=mounted:/host/path:/alias or ID=s3:bucket/prefix";
    let (id, rest) = entry
        .split_once('=')
        .filter(|(id, _)| !id.trim().is_empty())
        .ok_or_else(|| format!("filesystem '{entry}': {forms}"))?;
    let (kind, place) = rest
        .split_once(':')
        .ok_or_else(|| format!("filesystem '{entry}': {forms}"))?;
    let fs = match kind {
        "local" if place.starts_with('/') => Filesystem::Local { root: place.into() },
        "mounted" => match place.split_once(":/") {
            Some((host, alias)) if host.starts_with('/') => Filesystem::Mounted {
                host_path: host.into(),
                alias: format!("/{alias}").into(),
            },
            _ => return Err(format!("filesystem '{entry}': {forms}")),
        },
        "s3" => {
            let (bucket, prefix) = place.split_once('/').unwrap_or((place, ""));
            if bucket.is_empty() {
                return Err(format!("filesystem '{entry}': the bucket is missing"));
            }
            Filesystem::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            }
        }
        _ => return Err(format!("filesystem '{entry}': {forms}")),
    };
    Ok((id.trim().to_string(), fs))
}

/// The filesystems a deployment configures, by the identifier file references name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filesystems {
    by_id: IndexMap<String, Filesystem>,
}

impl Filesystems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, identifier: &str, filesystem: Filesystem) {
        self.by_id.insert(identifier.to_string(), filesystem);
    }

    pub fn get(&self, identifier: &str) -> Option<&Filesystem> {
        self.by_id.get(identifier)
    }

    /// Where the reference points; its file type is checked too, so a reference that could not
    /// be read is refused before anything touches the file.
    pub fn resolve(&self, file: &FileRef) -> Result<(Resolved, FileType), FileError> {
        let file_type = file.file_type()?;
        let filesystem =
            self.get(&file.filesystem_identifier)
                .ok_or_else(|| FileError::UnknownFilesystem {
                    id: file.filesystem_identifier.clone(),
                    known: self.by_id.keys().cloned().collect(),
                })?;
        Ok((filesystem.resolve(&file.filename)?, file_type))
    }
}

/// A file's bytes as a JSON value: text → string, json/yaml → the value, binary → base64 string.
pub fn decode(bytes: &[u8], file_type: FileType) -> Result<Value, FileError> {
    let fail = |message: String| FileError::Decode { file_type, message };
    match file_type {
        FileType::Text => std::str::from_utf8(bytes)
            .map(Value::from)
            .map_err(|e| fail(format!("not UTF-8 at byte {}", e.valid_up_to()))),
        FileType::Json => serde_json::from_slice(bytes).map_err(|e| fail(e.to_string())),
        FileType::Yaml => serde_yaml_ng::from_slice(bytes).map_err(|e| fail(e.to_string())),
        FileType::Binary => Ok(Value::from(BASE64.encode(bytes))),
    }
}

/// A JSON value as a file's bytes; the inverse of [`decode`]. Text and binary files need a
/// string (a text file is never written as JSON by accident); JSON is pretty-printed for people.
pub fn encode(value: &Value, file_type: FileType) -> Result<Vec<u8>, FileError> {
    let fail = |message: String| FileError::Encode { file_type, message };
    match (file_type, value) {
        (FileType::Text, Value::String(text)) => Ok(text.as_bytes().to_vec()),
        (FileType::Json, value) => serde_json::to_vec_pretty(value)
            .map(|mut bytes| {
                bytes.push(b'\n');
                bytes
            })
            .map_err(|e| fail(e.to_string())),
        (FileType::Yaml, value) => serde_yaml_ng::to_string(value)
            .map(String::into_bytes)
            .map_err(|e| fail(e.to_string())),
        (FileType::Binary, Value::String(text)) => {
            BASE64.decode(text).map_err(|e| fail(e.to_string()))
        }
        (FileType::Text | FileType::Binary, other) => Err(fail(format!(
            "needs {}, got {}",
            if file_type == FileType::Text {
                "text"
            } else {
                "a base64 string"
            },
            describe(other)
        ))),
    }
}

#[cfg(test)]
mod tests;
