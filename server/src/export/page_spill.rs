//! Parquet pages kept in an unnamed temp file while their row group is written.
//!
//! A column chunk must be contiguous in the file, but rows arrive with every column at once,
//! so the encoder holds all of a row group's finished pages until the group ends. On the heap
//! that buffer grows with the group, and small groups instead pile up footer metadata
//! (~1.9 KB per column chunk). Spilled, groups can be large (few of them, little metadata)
//! while memory stays flat at any study size. One file serves every column of an export; it
//! is rewritten from the start once a group's pages have all been taken back.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use parquet::arrow::arrow_writer::{PageKey, PageStore, PageStoreArgs, PageStoreFactory};
use parquet::errors::{ParquetError, Result};

/// Small blobs (page headers, short pages) are gathered up to this size before one write.
const WRITE_BUFFER: usize = 256 << 10;

/// The spill file shared by the column stores of one export.
struct Spill {
    file: File,
    /// Bytes already in `file`; `pending` continues from there.
    written: u64,
    pending: Vec<u8>,
    /// Blobs put and not yet taken. At zero nothing refers to the file, so it starts over.
    live: usize,
}

impl Spill {
    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all_at(&self.pending, self.written)?;
            self.written += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    fn put(&mut self, blob: &[u8]) -> Result<u64> {
        let offset = self.written + self.pending.len() as u64;
        if self.pending.len() + blob.len() > WRITE_BUFFER {
            self.flush()?;
        }
        if blob.len() > WRITE_BUFFER {
            self.file.write_all_at(blob, self.written)?;
            self.written += blob.len() as u64;
        } else {
            self.pending.extend_from_slice(blob);
        }
        self.live += 1;
        Ok(offset)
    }

    fn take(&mut self, offset: u64, len: usize) -> Result<Bytes> {
        // A blob lies wholly in the file or wholly in `pending`: `put` flushes before a
        // blob that would not fit, and writes a large one straight through.
        let blob = if offset >= self.written {
            let start = (offset - self.written) as usize;
            Bytes::copy_from_slice(&self.pending[start..start + len])
        } else {
            let mut buf = vec![0u8; len];
            self.file.read_exact_at(&mut buf, offset)?;
            Bytes::from(buf)
        };
        self.live -= 1;
        if self.live == 0 {
            self.written = 0;
            self.pending.clear();
        }
        Ok(blob)
    }
}

/// Hands each column chunk a [`SpillStore`] over one shared temp file.
pub(crate) struct SpillFactory {
    spill: Arc<Mutex<Spill>>,
}

impl std::fmt::Debug for SpillFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillFactory").finish_non_exhaustive()
    }
}

impl SpillFactory {
    /// An unnamed temp file in `dir`: the kernel frees it when the export ends, however it ends.
    pub fn create_in(dir: &Path) -> std::io::Result<SpillFactory> {
        Ok(SpillFactory {
            spill: Arc::new(Mutex::new(Spill {
                file: tempfile::tempfile_in(dir)?,
                written: 0,
                pending: Vec::with_capacity(WRITE_BUFFER),
                live: 0,
            })),
        })
    }

    /// Bytes the spill file holds now (tests).
    #[cfg(test)]
    pub fn spilled_bytes(&self) -> u64 {
        let spill = self.spill.lock().unwrap();
        spill.written + spill.pending.len() as u64
    }
}

impl PageStoreFactory for SpillFactory {
    fn create(&self, _args: &PageStoreArgs<'_>) -> Result<Box<dyn PageStore>> {
        Ok(Box::new(SpillStore {
            spill: self.spill.clone(),
            blobs: Vec::new(),
        }))
    }
}

/// One column chunk's pages: where each blob lies in the shared spill file.
struct SpillStore {
    spill: Arc<Mutex<Spill>>,
    blobs: Vec<(u64, usize)>,
}

impl SpillStore {
    fn spill(&self) -> Result<MutexGuard<'_, Spill>> {
        self.spill
            .lock()
            .map_err(|_| ParquetError::General("parquet spill file lock poisoned".into()))
    }
}

impl PageStore for SpillStore {
    fn put(&mut self, value: Bytes) -> Result<PageKey> {
        let offset = self.spill()?.put(&value)?;
        self.blobs.push((offset, value.len()));
        Ok(PageKey::new(self.blobs.len() as u64 - 1))
    }

    fn take(&mut self, key: PageKey) -> Result<Bytes> {
        let (offset, len) = *self
            .blobs
            .get(key.get() as usize)
            .ok_or_else(|| ParquetError::General(format!("no spilled page {}", key.get())))?;
        self.spill()?.take(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(factory: &SpillFactory) -> SpillStore {
        SpillStore {
            spill: factory.spill.clone(),
            blobs: Vec::new(),
        }
    }

    #[test]
    fn blobs_come_back_from_the_buffer_and_the_file_and_the_file_restarts_when_all_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let factory = SpillFactory::create_in(dir.path()).unwrap();
        let (mut a, mut b) = (store(&factory), store(&factory));
        let big = Bytes::from(vec![7u8; WRITE_BUFFER + 10]);
        let small: Vec<Bytes> = (0..2000u32)
            .map(|i| Bytes::from(i.to_le_bytes().repeat(1 + i as usize % 50)))
            .collect();
        let mut keys = Vec::new();
        for (i, blob) in small.iter().enumerate() {
            let store = if i % 2 == 0 { &mut a } else { &mut b };
            keys.push(store.put(blob.clone()).unwrap());
            if i == 1000 {
                keys.push(a.put(big.clone()).unwrap());
            }
        }
        let total: u64 = small.iter().map(|b| b.len() as u64).sum::<u64>() + big.len() as u64;
        assert_eq!(factory.spilled_bytes(), total);
        // Taken in another order than put: all of `b`'s, then `a`'s.
        for (i, blob) in small.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
            let key = keys[if i > 1000 { i + 1 } else { i }];
            assert_eq!(b.take(key).unwrap(), blob);
        }
        assert_eq!(a.take(keys[1001]).unwrap(), big);
        for (i, blob) in small.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            let key = keys[if i > 1000 { i + 1 } else { i }];
            assert_eq!(a.take(key).unwrap(), blob);
        }
        assert_eq!(
            factory.spilled_bytes(),
            0,
            "the next group starts at offset 0"
        );
        let mut c = store(&factory);
        let k = c.put(Bytes::from_static(b"next group")).unwrap();
        assert_eq!(&c.take(k).unwrap()[..], b"next group");
        assert!(c.take(PageKey::new(5)).is_err());
    }
}
