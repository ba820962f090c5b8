//! The package store: a set of directories of wheel and sdist files that any number of server
//! processes may share. It knows files, project names, versions, digests and metadata; it knows
//! nothing of HTTP.
//!
//! Listings come from a [`Backend`]: [`ConsistentBackend`] by default (as consistent as a scan,
//! at the cost of a few syscalls), [`ScanBackend`] (pypiserver's `simple-dir`) or
//! [`WatchBackend`] (its `cached-dir`). Whatever the backend, what the index learns about a
//! file (digests, metadata) is remembered per file version in a [`FileInfoCache`], so no file
//! is ever hashed twice.

pub mod archive;
mod cache;
mod coalesce;
pub mod consistent;
pub mod fs_clock;
mod lock;
pub mod metadata;
mod scan;
mod snapshot;
pub mod upload;
mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use cache::{FileDetails, FileInfoCache};
pub use consistent::ConsistentBackend;
pub use scan::ScanBackend;
pub use snapshot::Snapshot;
pub use watch::WatchBackend;

use crate::digest::HashAlgo;
use crate::names::{DistFilename, ProjectName};

/// One distribution file found in a package directory.
#[derive(Debug, Clone)]
pub struct DistFile {
    pub name: DistFilename,
    /// Where it is: for the index's own reads (routes ask the index, see [`Index::open_file`]).
    pub(crate) path: PathBuf,
    /// The path below its package directory, `/`-separated: the part of the URL after
    /// `/packages/`.
    pub relative_path: String,
    pub identity: FileIdentity,
}

impl DistFile {
    /// The same file, in the same version.
    pub fn same_version(&self, other: &DistFile) -> bool {
        self.path == other.path && self.identity == other.identity
    }
}

/// A package file opened for a download.
pub struct OpenedFile {
    pub file: std::fs::File,
    pub identity: FileIdentity,
    pub filename: String,
}

/// What tells one version of a file from another without reading it. A file replaced in place
/// changes at least one of these, unless the change lands in the same timestamp tick as the
/// last (see `FileInfoCache` for how that case is caught). The ctime is here because writing
/// can restore an mtime (`cp -p`, `touch -r`), never a ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub size: u64,
    pub modified: SystemTime,
    pub changed: SystemTime,
    pub inode: u64,
    pub device: u64,
}

impl FileIdentity {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            size: metadata.len(),
            modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            changed: fs_clock::timestamp(metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }

    /// When the file last changed, content or inode.
    pub fn last_change(&self) -> SystemTime {
        self.modified.max(self.changed)
    }
}

/// Opens a file for reading only if it is a regular file. Opening a FIFO for reading blocks
/// until a writer comes, so a dist-named FIFO (or a file replaced by one after its `stat`)
/// would hold a thread forever: `O_NONBLOCK` makes the open return at once, and for a
/// regular file it changes nothing.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Where each package directory really is, symlinks resolved. A root that cannot be resolved
/// (missing at start-up) stands for itself.
fn real_roots(roots: &[PathBuf]) -> Vec<PathBuf> {
    roots
        .iter()
        .map(|root| std::fs::canonicalize(root).unwrap_or_else(|_| root.clone()))
        .collect()
}

/// True when `path` resolves to a place inside one of the package directories: a symlink is
/// served only then, so a dist-named link to `/etc/shadow` is never read out.
fn resolves_inside(path: &Path, real_roots: &[PathBuf]) -> bool {
    std::fs::canonicalize(path)
        .is_ok_and(|real| real_roots.iter().any(|root| real.starts_with(root)))
}

/// At most this many unreadable entries are remembered (and logged); past it, more go
/// unlogged rather than grow memory with a tree that is mostly broken.
const UNREADABLE_REMEMBERED: usize = 10_000;

/// Entries left out because they cannot be read, each logged once: a broken entry (a
/// root-owned `lost+found`, a symlink loop) stays broken for every request, and one warning
/// per request would flood the log.
#[derive(Default)]
pub struct Unreadable {
    logged: Mutex<HashSet<PathBuf>>,
}

impl Unreadable {
    /// Logs that `path` is left out because of `why`, unless it already was. Returns whether
    /// this call logged.
    pub fn skip(&self, path: &Path, why: &dyn std::fmt::Display) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() >= UNREADABLE_REMEMBERED || !logged.insert(path.to_owned()) {
            return false;
        }
        tracing::warn!("leaving out {}: {why}", path.display());
        true
    }
}

/// What one directory entry is to the index.
enum Entry {
    Dir(PathBuf),
    File(Box<DistFile>),
    Skipped,
}

/// The rule every backend applies to a directory entry. Hidden entries are skipped (uploads
/// in progress live there, see `upload`, and so does `.git`). Real directories are walked;
/// a symlink to one is not: pypiserver's `os.walk` does not follow them either, and a link to
/// `.` would be walked until the path is too long. A dist-named regular file is listed, a
/// symlink to one only if it resolves inside a package directory. Whatever cannot be read
/// (a symlink loop, a dangling link, permissions) is skipped and logged once, and is never
/// opened: a FIFO is skipped on its `stat`.
fn classify(
    root: &Path,
    real_roots: &[PathBuf],
    entry: &std::fs::DirEntry,
    unreadable: &Unreadable,
) -> Entry {
    let os_name = entry.file_name();
    let Some(name) = os_name.to_str().filter(|name| !name.starts_with('.')) else {
        return Entry::Skipped;
    };
    let path = entry.path();
    let file_type = match entry.file_type() {
        Ok(file_type) => file_type,
        Err(err) => {
            unreadable.skip(&path, &err);
            return Entry::Skipped;
        }
    };
    if file_type.is_dir() {
        return Entry::Dir(path);
    }
    let Ok(parsed) = DistFilename::parse(name) else {
        return Entry::Skipped;
    };
    let metadata = match std::fs::metadata(&path) {
        Ok(metadata) => metadata,
        // Deleted since the directory was read: simply gone. A symlink still there dangles.
        Err(err) if is_gone(&err) && !file_type.is_symlink() => return Entry::Skipped,
        Err(err) => {
            unreadable.skip(&path, &err);
            return Entry::Skipped;
        }
    };
    if !metadata.is_file() {
        unreadable.skip(&path, &"not a regular file");
        return Entry::Skipped;
    }
    if file_type.is_symlink() && !resolves_inside(&path, real_roots) {
        unreadable.skip(&path, &"a symlink to outside the package directories");
        return Entry::Skipped;
    }
    Entry::File(Box::new(DistFile {
        name: parsed,
        relative_path: relative_path(root, &path),
        path,
        identity: FileIdentity::of(&metadata),
    }))
}

/// A path that vanished, or one of whose directories did.
fn is_gone(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ENOTDIR)
}

/// `path` below `root`, `/`-separated: the part of the URL after `/packages/`.
fn relative_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// What [`Backend::join_check`] returns: the snapshot of a check that began after the call,
/// or the caller's place for running one itself (`None` for a backend without shared checks).
pub type JoinedCheck = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Arc<Snapshot>, Option<Ticket>>> + Send>,
>;

pub use coalesce::Ticket;

/// Where listings come from. The scanning backend is the reference the others must agree with.
pub trait Backend: Send + Sync {
    /// Every distribution file as the directories hold it now, built with
    /// [`Snapshot::from_found`] so that every backend serves the same copy of a filename
    /// found twice.
    fn snapshot(&self) -> std::io::Result<Arc<Snapshot>>;
    /// For a caller on the async runtime, before it takes a blocking thread to call
    /// `snapshot`: a backend that shares one check among requests lets them wait for a check
    /// in flight as tasks, and hands over its result if it began after this call.
    fn join_check(&self) -> JoinedCheck {
        Box::pin(std::future::ready(Err(None)))
    }
    /// `snapshot`, for a caller that waited in [`Backend::join_check`] and holds a place.
    fn snapshot_from(&self, _ticket: Option<Ticket>) -> std::io::Result<Arc<Snapshot>> {
        self.snapshot()
    }
    /// Tells the backend that a file was published or removed through this process.
    fn invalidate(&self) {}
    /// Tells the backend that this process has just published the file at `path`.
    fn published(&self, _path: &Path) {
        self.invalidate();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The default: consistent-dir.
    Auto,
    /// Re-read a directory only when its timestamps moved: consistent across replicas that
    /// share the directory, at a constant cost per request.
    ConsistentDir,
    /// Scan every directory on every request (pypiserver's simple-dir).
    SimpleDir,
    /// Cache per process, refreshed by inotify (pypiserver's cached-dir): fast, but blind to
    /// changes made by other hosts sharing the directory over NFS.
    CachedDir,
}

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// The package directories; uploads go to the first.
    pub roots: Vec<PathBuf>,
    /// The digest advertised in links, or none (`--hash-algo off`).
    pub hash_algo: Option<HashAlgo>,
    /// Replace an existing file on upload instead of refusing it.
    pub overwrite: bool,
    pub backend: BackendKind,
}

/// The package store.
pub struct Index {
    config: IndexConfig,
    /// The roots with symlinks resolved, to tell where a symlink leads.
    real_roots: Vec<PathBuf>,
    backend: Box<dyn Backend>,
    cache: FileInfoCache,
    unreadable: Unreadable,
    /// The snapshot the cache was last trimmed to, so trimming happens once per change.
    trimmed_for: std::sync::Mutex<Option<Arc<Snapshot>>>,
}

impl Index {
    pub fn open(config: IndexConfig) -> Self {
        let roots = config.roots.clone();
        let backend: Box<dyn Backend> = match config.backend {
            BackendKind::Auto | BackendKind::ConsistentDir => {
                Box::new(ConsistentBackend::new(roots))
            }
            BackendKind::SimpleDir => Box::new(ScanBackend::new(roots)),
            BackendKind::CachedDir => Box::new(WatchBackend::new(roots)),
        };
        Self {
            cache: FileInfoCache::new(config.hash_algo, config.roots.clone()),
            real_roots: real_roots(&config.roots),
            config,
            backend,
            unreadable: Unreadable::default(),
            trimmed_for: std::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    pub fn upload_dir(&self) -> &Path {
        &self.config.roots[0]
    }

    /// The snapshot, from a thread that may block.
    pub fn snapshot(&self) -> std::io::Result<Arc<Snapshot>> {
        Ok(self.trimmed_to(self.backend.snapshot()?))
    }

    /// `then` applied to the current snapshot, off the runtime. Waiting for a check another
    /// request runs costs no thread, and a request that runs the check itself does it and
    /// `then` in one trip to the blocking pool.
    pub async fn with_snapshot<R: Send + 'static>(
        self: &Arc<Self>,
        then: impl FnOnce(&Index, Arc<Snapshot>) -> std::io::Result<R> + Send + 'static,
    ) -> std::io::Result<R> {
        let joined = self.backend.join_check().await;
        let index = self.clone();
        tokio::task::spawn_blocking(move || {
            let snapshot = match joined {
                Ok(snapshot) => snapshot,
                Err(ticket) => index.backend.snapshot_from(ticket)?,
            };
            let snapshot = index.trimmed_to(snapshot);
            then(&index, snapshot)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Trims the cache to `snapshot` if it is new since the last call: once per change.
    fn trimmed_to(&self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        let mut trimmed_for = self.trimmed_for.lock().unwrap_or_else(|e| e.into_inner());
        if !trimmed_for
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, &snapshot))
        {
            self.cache.trim_to(&snapshot);
            *trimmed_for = Some(snapshot.clone());
        }
        snapshot
    }

    /// `file` as the disk holds it now, or `None` if it is gone or can no longer be read.
    /// Needed because writing into an existing file (`cp` onto its name) moves no directory
    /// timestamp, so a listing can hold the identity of an older version.
    pub fn as_on_disk(&self, file: &Arc<DistFile>) -> std::io::Result<Option<Arc<DistFile>>> {
        match std::fs::metadata(&file.path) {
            Ok(metadata) if FileIdentity::of(&metadata) == file.identity => Ok(Some(file.clone())),
            Ok(metadata) if metadata.is_file() => Ok(Some(Arc::new(DistFile {
                identity: FileIdentity::of(&metadata),
                ..DistFile::clone(file)
            }))),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => {
                self.unreadable.skip(&file.path, &err);
                Ok(None)
            }
        }
    }

    /// What the index advertises about a file; computed once per file version.
    pub fn details(&self, file: &DistFile) -> std::io::Result<Arc<FileDetails>> {
        self.cache.details(file)
    }

    /// Each file with what the index advertises about it. A file gone since it was listed is
    /// left out, and so is one that cannot be read (logged once): one bad file must not take
    /// its project page, `/packages/` and the JSON down with it.
    pub fn described(&self, files: Vec<Arc<DistFile>>) -> Vec<(Arc<DistFile>, Arc<FileDetails>)> {
        let mut described = Vec::with_capacity(files.len());
        for file in files {
            match self.cache.details(&file) {
                Ok(details) => described.push((file, details)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    self.unreadable.skip(&file.path, &err);
                }
            }
        }
        described
    }

    /// A wheel's METADATA (PEP 658), or `None` for a file that has none. The first request
    /// for a file version walks its archive (once, however many ask at once); later ones
    /// read the bytes where that walk found them.
    pub fn core_metadata(&self, file: &DistFile) -> std::io::Result<Option<Vec<u8>>> {
        let mut file = file.clone();
        // A second try for a file replaced between its `stat` and the read.
        for _ in 0..2 {
            let details = match self.cache.details(&file) {
                Ok(details) => details,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(err) => {
                    self.unreadable.skip(&file.path, &err);
                    return Ok(None);
                }
            };
            let Some(at) = details.core_metadata_at else {
                return Ok(None);
            };
            if let Some(bytes) = metadata::wheel_metadata_at(&file.path, &file.identity, &at)? {
                return Ok(Some(bytes));
            }
            let Some(now) = self.as_on_disk(&Arc::new(file.clone()))? else {
                return Ok(None);
            };
            file = DistFile::clone(&now);
        }
        Ok(None)
    }

    pub fn cache(&self) -> &FileInfoCache {
        &self.cache
    }

    /// Opens the file at `relative_path` below a package directory, for a download. Blocking.
    /// `None` for what no listing shows: no such file, one removed since it was found, or one
    /// the server may not read (every listing leaves those out, and says so once in the log).
    /// The identity is that of the file opened, so that a replacement in between cannot pair
    /// new bytes with an old ETag.
    pub fn open_file(&self, relative_path: &str) -> std::io::Result<Option<OpenedFile>> {
        let Some(found) = self.find(relative_path)? else {
            return Ok(None);
        };
        let opened = open_regular(&found.path)
            .and_then(|file| Ok((FileIdentity::of(&file.metadata()?), file)));
        match opened {
            Ok((identity, file)) => Ok(Some(OpenedFile {
                file,
                identity,
                filename: found.name.filename().to_owned(),
            })),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                self.unreadable.skip(&found.path, &err);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// Finds a file by its path below a package directory, without walking the tree. Only a
    /// distribution file can be found this way: a path with a hidden, empty or `..` segment,
    /// or naming anything else that happens to be in the directory, is not found.
    pub fn find(&self, relative_path: &str) -> std::io::Result<Option<DistFile>> {
        let segments: Vec<&str> = relative_path.split('/').collect();
        if segments
            .iter()
            .any(|s| s.is_empty() || s.starts_with('.') || s.contains(['\\', '\0']))
        {
            return Ok(None);
        }
        let Ok(name) = DistFilename::parse(segments[segments.len() - 1]) else {
            return Ok(None);
        };
        for root in &self.config.roots {
            let path = segments.iter().fold(root.clone(), |p, s| p.join(s));
            match std::fs::metadata(&path) {
                // The path may pass through symlinks below the root: where it really leads decides.
                Ok(meta) if meta.is_file() && self.stays_inside(root, &segments, &path) => {
                    return Ok(Some(DistFile {
                        name,
                        path,
                        relative_path: relative_path.to_owned(),
                        identity: FileIdentity::of(&meta),
                    }));
                }
                Ok(_) => {}
                Err(err) if is_gone(&err) => {}
                // A path no directory can hold is not here either.
                Err(err) if err.raw_os_error() == Some(libc::ENAMETOOLONG) => {}
                Err(err) => {
                    self.unreadable.skip(&path, &err);
                }
            }
        }
        Ok(None)
    }

    /// Whether `path`, `root` joined with `segments`, leads inside a package directory. Without
    /// a symlink below the root it does by construction, which one `lstat` per segment shows
    /// (one for a flat directory); only a path through a link is resolved whole, which costs a
    /// call per component of the path, root included, on every download.
    fn stays_inside(&self, root: &Path, segments: &[&str], path: &Path) -> bool {
        let mut below = root.to_path_buf();
        for segment in segments {
            below.push(segment);
            match std::fs::symlink_metadata(&below) {
                Ok(meta) if !meta.file_type().is_symlink() => {}
                _ => return resolves_inside(path, &self.real_roots),
            }
        }
        true
    }

    /// Deletes every file of `project` at `version` (compared as PEP 440 versions, so `1.0`
    /// and `1.0.0` are one version). Returns the filenames removed.
    pub fn remove(&self, project: &ProjectName, version: &str) -> Result<Vec<String>, IndexError> {
        let wanted: pep440_rs::Version =
            version.parse().map_err(|_| IndexError::InvalidVersion {
                version: crate::names::quoted_prefix(version),
            })?;
        let snapshot = self.snapshot().map_err(IndexError::Io)?;
        let mut removed = Vec::new();
        for file in snapshot.project(project).unwrap_or_default() {
            if *file.name.parsed_version() == wanted {
                match std::fs::remove_file(&file.path) {
                    Ok(()) => removed.push(file.name.filename().to_owned()),
                    // Another replica removed it first: the outcome the caller asked for.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(IndexError::Io(err)),
                }
            }
        }
        self.backend.invalidate();
        if removed.is_empty() {
            return Err(IndexError::NothingToRemove {
                project: project.to_string(),
                version: version.to_owned(),
            });
        }
        Ok(removed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{version:?} is not a valid PEP 440 version")]
    InvalidVersion { version: String },
    #[error("no files of {project} {version} to remove")]
    NothingToRemove { project: String, version: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_entry_is_logged_once() {
        let unreadable = Unreadable::default();
        let path = Path::new("/srv/packages/lost+found");
        assert!(unreadable.skip(path, &"permission denied"));
        assert!(!unreadable.skip(path, &"permission denied"));
        assert!(unreadable.skip(Path::new("/srv/packages/loop-1.0.tar.gz"), &"loop"));
    }

    #[test]
    fn a_fifo_is_not_opened_for_reading() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("demo-1.0.tar.gz");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
