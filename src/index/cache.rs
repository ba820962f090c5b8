//! What the index learned about each file version: its advertised digest, its sha256 and its
//! metadata. Keyed by path and [`FileIdentity`], so a file replaced in place is read again and
//! an unchanged one never is.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::metadata::{metadata_for, DistMetadata};
use super::{DistFile, FileIdentity};
use crate::digest::{hash_file, hex_digest, HashAlgo};

/// What the simple pages say about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDetails {
    /// The `--hash-algo` digest, for the link fragment; `None` with `--hash-algo off`.
    pub link_hash: Option<(HashAlgo, String)>,
    pub requires_python: Option<String>,
    /// sha256 of the wheel's METADATA bytes (PEP 658), when the file is a wheel that has one.
    pub core_metadata_sha256: Option<String>,
}

pub struct FileInfoCache {
    hash_algo: Option<HashAlgo>,
    entries: Mutex<HashMap<PathBuf, (FileIdentity, Arc<FileDetails>)>>,
}

impl FileInfoCache {
    pub fn new(hash_algo: Option<HashAlgo>) -> Self {
        Self {
            hash_algo,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, file: &DistFile) -> Option<Arc<FileDetails>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&file.path)
            .filter(|(identity, _)| *identity == file.identity)
            .map(|(_, details)| details.clone())
    }

    /// The details of `file`, read from it only when this version of it was never seen.
    pub fn details(&self, file: &DistFile) -> std::io::Result<Arc<FileDetails>> {
        if let Some(details) = self.cached(file) {
            return Ok(details);
        }
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
        });
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(file.path.clone(), (file.identity, details.clone()));
        details
    }

    /// Forgets files that are no longer in the directories, so the cache stays the size of the
    /// tree.
    pub fn retain_only<'a>(&self, files: impl Iterator<Item = &'a Arc<DistFile>>) {
        let live: std::collections::HashSet<&PathBuf> = files.map(|f| &f.path).collect();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|path, _| live.contains(path));
    }

    pub fn hash_algo(&self) -> Option<HashAlgo> {
        self.hash_algo
    }
}
