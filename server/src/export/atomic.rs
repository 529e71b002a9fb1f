//! Write-to-temp-then-rename: readers of `dest` only ever see a complete file.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::error::ExportError;

/// A temp file `.<name>.tmp-<random>` beside `dest`. Dropping it without `commit` (error,
/// cancellation) deletes it.
pub(crate) struct AtomicFile {
    temp: NamedTempFile,
    dest: PathBuf,
}

/// What `commit` reports about the final file.
pub(crate) struct Committed {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Lower-case hex of a digest (SHA-256 values everywhere in the project).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Size and hex SHA-256 of a file, read in constant memory.
pub(crate) fn file_digest(path: &Path) -> Result<(u64, String), ExportError> {
    let file = File::open(path).map_err(|e| ExportError::io("read back", path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| ExportError::io("read back", path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((bytes, hex(&hasher.finalize())))
}

impl AtomicFile {
    /// Validate `dest`, create its directory if missing, and open the temp file there.
    pub fn create(dest: &Path) -> Result<AtomicFile, ExportError> {
        let bad = |reason: &str| ExportError::InvalidDestination {
            path: dest.display().to_string(),
            reason: reason.into(),
        };
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("it has no file name (or the name is not UTF-8)"))?;
        if dest.is_dir() {
            return Err(bad("it is a directory"));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| ExportError::io("create directory", &dir, e))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .rand_bytes(8)
            .tempfile_in(&dir)
            .map_err(|e| ExportError::io("create temp file in", &dir, e))?;
        Ok(AtomicFile {
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// Path of the temp file (for libraries that open by path, e.g. SQLite).
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Directory holding `dest` (and the temp file).
    pub fn dir(&self) -> &Path {
        self.temp.path().parent().unwrap_or(Path::new("."))
    }

    /// A second handle on the temp file, for writers that want to own one.
    pub fn handle(&self) -> Result<File, ExportError> {
        self.temp
            .as_file()
            .try_clone()
            .map_err(|e| ExportError::io("open temp file", self.temp.path(), e))
    }

    /// fsync, hash, and atomically rename over `dest`. Every other handle on the temp file
    /// must have been flushed (and should be closed) before this.
    pub fn commit(self) -> Result<Committed, ExportError> {
        let tmp = self.temp.path().to_path_buf();
        self.temp
            .as_file()
            .sync_all()
            .map_err(|e| ExportError::io("fsync", &tmp, e))?;
        let (bytes, sha256) = file_digest(&tmp)?;
        #[cfg(unix)]
        {
            // Temp files are created 0600; exports are meant to be read by other tools.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| ExportError::io("set permissions on", &tmp, e))?;
        }
        let dir = self.dir().to_path_buf();
        let dest = self.dest;
        self.temp
            .persist(&dest)
            .map_err(|e| ExportError::io("rename temp file onto", &dest, e.error))?;
        // Make the rename itself durable; not every filesystem supports syncing a directory.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(Committed {
            path: dest.display().to_string(),
            bytes,
            sha256,
        })
    }
}
