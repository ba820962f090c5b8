//! What the index learned about each file version: its advertised digest, its sha256 and its
//! metadata. Keyed by path and [`FileIdentity`], so a file replaced in place is read again and
//! an unchanged one never is. Requests that find the same new version at the same time wait
//! for one read of it instead of each making their own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::archive::EntryLocation;
use super::consistent::SETTLE_WINDOW;
use super::fs_clock::{self, FsClocks};
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

/// A cached reading of a file, and whether it may be served without reading the file again.
///
/// The racy case again (see `consistent`): a file rewritten in the same timestamp tick as it
/// was read, at the same size, keeps its identity. So a reading is trusted only if it began
/// after the filesystem's clock had moved past the file's last change: any later change then
/// carries a later timestamp and a new identity. An untrusted reading is served to the
/// request that made it and read again by the next.
struct Cached {
    identity: FileIdentity,
    details: Arc<FileDetails>,
    trusted: bool,
}

pub struct FileInfoCache {
    hash_algo: Option<HashAlgo>,
    /// The package directories, whose filesystem clocks judge readings.
    roots: Vec<PathBuf>,
    clocks: FsClocks,
    entries: Mutex<HashMap<PathBuf, Cached>>,
    /// Versions being read now, so that a second request for one waits for the first read.
    reading: Mutex<HashMap<(PathBuf, FileIdentity), Reading>>,
    /// How many files were read for their details: what the cache exists to keep low.
    reads: AtomicU64,
}

impl FileInfoCache {
    pub fn new(hash_algo: Option<HashAlgo>, roots: Vec<PathBuf>) -> Self {
        Self {
            hash_algo,
            roots,
            clocks: FsClocks::default(),
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
            .filter(|cached| cached.trusted && cached.identity == file.identity)
            .map(|cached| cached.details.clone())
    }

    /// Now, by the clock that stamps `file`: its filesystem's, or, where that cannot be read,
    /// this host's less the margin the directory listings allow for skew and granularity.
    fn clock_for(&self, file: &DistFile) -> SystemTime {
        let root = self.roots.iter().find(|root| file.path.starts_with(root));
        match root.and_then(|root| self.clocks.now(root)) {
            Some(now) if now.device == file.identity.device => now.at,
            _ => SystemTime::now()
                .checked_sub(SETTLE_WINDOW)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    /// A reading of the clock taken past `file`'s last change if that comes within a short
    /// wait (a kernel tick), else the last reading.
    fn clock_past(&self, file: &DistFile) -> SystemTime {
        fs_clock::await_past(file.identity.last_change(), || Some(self.clock_for(file)))
            .unwrap_or(SystemTime::UNIX_EPOCH)
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
        let began = self.clock_past(file);
        self.reads.fetch_add(1, Ordering::Relaxed);
        let link_hex = match self.hash_algo {
            Some(algo) => hash_file(&file.path, &[algo])?.pop(),
            None => None,
        };
        let metadata = metadata_for(&file.path, file.name.kind());
        Ok(self.record(
            file,
            link_hex,
            &metadata,
            began > file.identity.last_change(),
        ))
    }

    /// Records what an upload already computed while streaming, so the new file is not read
    /// again just to be listed. `link_hex` is the `--hash-algo` digest of the file.
    ///
    /// The digests are of the bytes the upload wrote, but a writer in the same tick as the
    /// upload's last change could have rewritten them without a trace: they are trusted only
    /// if the clock has already moved on, else the first listing reads the file once.
    pub fn insert(
        &self,
        file: &DistFile,
        link_hex: Option<String>,
        metadata: &DistMetadata,
    ) -> Arc<FileDetails> {
        let trusted = self.clock_for(file) > file.identity.last_change();
        self.record(file, link_hex, metadata, trusted)
    }

    fn record(
        &self,
        file: &DistFile,
        link_hex: Option<String>,
        metadata: &DistMetadata,
        trusted: bool,
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
        entries.insert(
            file.path.clone(),
            Cached {
                identity: file.identity,
                details: details.clone(),
                trusted,
            },
        );
        details
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn dist_file(path: &std::path::Path) -> DistFile {
        DistFile {
            name: crate::names::DistFilename::parse(path.file_name().unwrap().to_str().unwrap())
                .unwrap(),
            path: path.to_owned(),
            relative_path: path.file_name().unwrap().to_string_lossy().into_owned(),
            identity: FileIdentity::of(&std::fs::metadata(path).unwrap()),
        }
    }

    fn set_mtime(path: &std::path::Path, mtime: SystemTime) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(mtime).unwrap();
    }

    fn digest(cache: &FileInfoCache, path: &std::path::Path) -> String {
        let details = cache.details(&dist_file(path)).unwrap();
        details.link_hash.clone().unwrap().1
    }

    #[test]
    fn a_rewrite_that_restores_the_mtime_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo-1.0.tar.gz");
        std::fs::write(&path, b"first").unwrap();
        let cache = FileInfoCache::new(Some(HashAlgo::Sha256), vec![dir.path().to_owned()]);
        let first = digest(&cache, &path);
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        // Same size, same mtime (as `cp -p` or `touch -r` leave it): only the ctime moved.
        std::fs::write(&path, b"other").unwrap();
        set_mtime(&path, mtime);
        assert_ne!(digest(&cache, &path), first);
        assert_eq!(cache.reads(), 2);
    }

    #[test]
    fn a_reading_that_did_not_begin_after_the_last_change_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo-1.0.tar.gz");
        std::fs::write(&path, b"settled").unwrap();
        let cache = FileInfoCache::new(Some(HashAlgo::Sha256), vec![dir.path().to_owned()]);
        digest(&cache, &path);
        digest(&cache, &path);
        assert_eq!(cache.reads(), 1, "a settled file is read once");
        // A last change the clock has not reached yet, as a change in the current tick of a
        // coarse filesystem looks: whatever was read may be rewritten unseen, so every
        // reading is provisional.
        let future = dir.path().join("demo-2.0.tar.gz");
        std::fs::write(&future, b"racy").unwrap();
        set_mtime(&future, SystemTime::now() + Duration::from_secs(3600));
        digest(&cache, &future);
        digest(&cache, &future);
        assert_eq!(cache.reads(), 3);
    }
}
