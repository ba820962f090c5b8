//! What the index learned about each file version: its advertised digest, its sha256 and its
//! metadata. Keyed by path and [`FileIdentity`], so a file replaced in place is read again and
//! an unchanged one never is. Requests that find the same new version at the same time wait
//! for one read of it instead of each making their own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::archive::EntryLocation;
use super::metadata::{metadata_for, DistMetadata};
use super::{DistFile, FileIdentity, Snapshot};
use crate::digest::{hash_file, hex_digest, HashAlgo};

/// What the simple pages say about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDetails {
    /// The `--hash-algo` digest, for the link fragment; `None` with `--hash-algo off`.
    pub link_hash: Option<(HashAlgo, String)>,
    pub requires_python: Option<String>,
    /// sha256 of the wheel's METADATA bytes (PEP 658), when the file is a wheel that has one.
    pub core_metadata_sha256: Option<String>,
    /// Where those bytes are in the wheel, so serving them costs a small read, not a walk of
    /// the archive (the bytes themselves are not kept: with 100k wheels they would not fit).
    pub core_metadata_at: Option<EntryLocation>,
}

/// The outcome of one read of a file version, shared by every request that waited for it.
/// `std::io::Error` is not `Clone`, so an error travels as its kind and message.
type Reading = Arc<OnceLock<Result<Arc<FileDetails>, (std::io::ErrorKind, String)>>>;

pub struct FileInfoCache {
    hash_algo: Option<HashAlgo>,
    entries: Mutex<HashMap<PathBuf, (FileIdentity, Arc<FileDetails>)>>,
    /// Versions being read now, so that a second request for one waits for the first read.
    reading: Mutex<HashMap<(PathBuf, FileIdentity), Reading>>,
    /// How many files were read for their details: what the cache exists to keep low.
    reads: AtomicU64,
}

impl FileInfoCache {
    pub fn new(hash_algo: Option<HashAlgo>) -> Self {
        Self {
            hash_algo,
            entries: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
            reads: AtomicU64::new(0),
        }
    }

    /// How many times a file was read (hashed, its archive opened) for its details.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn cached(&self, file: &DistFile) -> Option<Arc<FileDetails>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&file.path)
            .filter(|(identity, _)| *identity == file.identity)
            .map(|(_, details)| details.clone())
    }

    /// The details of `file`, read from it only when this version of it was never seen, and
    /// then once however many requests ask at the same time.
    pub fn details(&self, file: &DistFile) -> std::io::Result<Arc<FileDetails>> {
        if let Some(details) = self.cached(file) {
            return Ok(details);
        }
        let key = (file.path.clone(), file.identity);
        let reading = self
            .reading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let outcome = reading
            .get_or_init(|| {
                // A read that ended between the miss above and here left its result.
                if let Some(details) = self.cached(file) {
                    return Ok(details);
                }
                self.read(file).map_err(|err| (err.kind(), err.to_string()))
            })
            .clone();
        let mut in_progress = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        if in_progress
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &reading))
        {
            in_progress.remove(&key);
        }
        outcome.map_err(|(kind, message)| std::io::Error::new(kind, message))
    }

    fn read(&self, file: &DistFile) -> std::io::Result<Arc<FileDetails>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let link_hex = match self.hash_algo {
            Some(algo) => hash_file(&file.path, &[algo])?.pop(),
            None => None,
        };
        let metadata = metadata_for(&file.path, file.name.kind());
        Ok(self.insert(file, link_hex, &metadata))
    }

    /// Records what an upload already computed while streaming, so the new file is not read
    /// again just to be listed. `link_hex` is the `--hash-algo` digest of the file.
    pub fn insert(
        &self,
        file: &DistFile,
        link_hex: Option<String>,
        metadata: &DistMetadata,
    ) -> Arc<FileDetails> {
        let details = Arc::new(FileDetails {
            link_hash: self.hash_algo.zip(link_hex),
            requires_python: metadata.requires_python.clone(),
            core_metadata_sha256: metadata
                .core_metadata
                .as_deref()
                .map(|bytes| hex_digest(HashAlgo::Sha256, bytes)),
            core_metadata_at: metadata.core_metadata_at,
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(file.path.clone(), (file.identity, details.clone()));
        details
    }

    /// Forgets files that are no longer in the directories, so the cache stays the size of the
    /// tree.
    /// Forgets files `snapshot` no longer lists, once they are many: a busy index makes a
    /// snapshot per file that lands, and trimming at each would cost a pass over the whole
    /// index per upload. Forgotten entries stay bounded by a quarter of the index (at least
    /// 1,024), so each trim pays for that many changes.
    pub fn trim_to(&self, snapshot: &Snapshot) {
        let slack = (snapshot.len() / 4).max(1024);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() <= snapshot.len() + slack {
            return;
        }
        let live: std::collections::HashSet<&PathBuf> = snapshot.files().map(|f| &f.path).collect();
        entries.retain(|path, _| live.contains(path));
    }

    pub fn hash_algo(&self) -> Option<HashAlgo> {
        self.hash_algo
    }
}
