//! The package store: a set of directories of wheel and sdist files that any number of server
//! processes may share. It knows files, project names, versions, digests and metadata; it knows
//! nothing of HTTP.
//!
//! Listings come from a [`Backend`]: [`ConsistentBackend`] by default (as consistent as a scan,
//! at the cost of a few syscalls), [`ScanBackend`] (pypiserver's `simple-dir`) or
//! [`WatchBackend`] (its `cached-dir`). Whatever the backend, what the index learns about a
//! file (digests, metadata) is remembered per file version in a [`FileInfoCache`], so no file
//! is ever hashed twice.

mod cache;
pub mod consistent;
mod lock;
pub mod metadata;
mod scan;
pub mod upload;
mod watch;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub use cache::{FileDetails, FileInfoCache};
pub use consistent::ConsistentBackend;
pub use scan::ScanBackend;
pub use watch::WatchBackend;

use crate::digest::HashAlgo;
use crate::names::{DistFilename, ProjectName};

/// One distribution file found in a package directory.
#[derive(Debug, Clone)]
pub struct DistFile {
    pub name: DistFilename,
    pub path: PathBuf,
    /// The path below its package directory, `/`-separated: the part of the URL after
    /// `/packages/`.
    pub relative_path: String,
    pub identity: FileIdentity,
}

/// What tells one version of a file from another without reading it. A file replaced in place
/// changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub size: u64,
    pub modified: SystemTime,
    pub inode: u64,
    pub device: u64,
}

impl FileIdentity {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            size: metadata.len(),
            modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }
}

/// Every distribution file, grouped by project, each project's files in version order.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub projects: BTreeMap<ProjectName, Vec<Arc<DistFile>>>,
    by_filename: HashMap<String, Arc<DistFile>>,
}

impl Snapshot {
    pub fn from_files(files: impl IntoIterator<Item = DistFile>) -> Self {
        Self::from_shared(files.into_iter().map(Arc::new))
    }

    /// The snapshot of `files` found under `roots`, ordered as the roots are, then by path
    /// below the root: the order that decides which copy of a filename found twice is served
    /// and listed. It is the order in which `Index::find` looks a path up.
    pub fn from_found(roots: &[PathBuf], files: impl IntoIterator<Item = Arc<DistFile>>) -> Self {
        let root_of = |file: &DistFile| roots.iter().position(|root| file.path.starts_with(root));
        let mut found: Vec<_> = files
            .into_iter()
            .map(|file| (root_of(&file), file))
            .collect();
        found.sort_by(|(root_a, a), (root_b, b)| {
            root_a
                .cmp(root_b)
                .then_with(|| a.relative_path.cmp(&b.relative_path))
        });
        Self::from_shared(found.into_iter().map(|(_, file)| file))
    }

    /// The snapshot of `files`, in the order given (the first of two files with one filename
    /// is the one served).
    pub fn from_shared(files: impl IntoIterator<Item = Arc<DistFile>>) -> Self {
        let mut projects: BTreeMap<ProjectName, Vec<Arc<DistFile>>> = BTreeMap::new();
        let mut by_filename = HashMap::new();
        for file in files {
            // The same filename in two directories is one file to pip: the first wins (see
            // `from_found` for the order), and only it is listed.
            match by_filename.entry(file.name.filename().to_owned()) {
                Entry::Occupied(_) => continue,
                Entry::Vacant(vacant) => vacant.insert(file.clone()),
            };
            projects
                .entry(file.name.project().clone())
                .or_default()
                .push(file);
        }
        for files in projects.values_mut() {
            files.sort_by(|a, b| {
                a.name
                    .parsed_version()
                    .cmp(b.name.parsed_version())
                    .then_with(|| a.name.filename().cmp(b.name.filename()))
            });
        }
        Self {
            projects,
            by_filename,
        }
    }

    pub fn files(&self) -> impl Iterator<Item = &Arc<DistFile>> {
        self.projects.values().flatten()
    }

    pub fn project(&self, project: &ProjectName) -> Option<&[Arc<DistFile>]> {
        self.projects.get(project).map(Vec::as_slice)
    }

    pub fn find_filename(&self, filename: &str) -> Option<&Arc<DistFile>> {
        self.by_filename.get(filename)
    }
}

/// Where listings come from. The scanning backend is the reference the others must agree with.
pub trait Backend: Send + Sync {
    /// Every distribution file as the directories hold it now, built with
    /// [`Snapshot::from_found`] so that every backend serves the same copy of a filename
    /// found twice.
    fn snapshot(&self) -> std::io::Result<Arc<Snapshot>>;
    /// Tells the backend that a file was published or removed through this process.
    fn invalidate(&self) {}
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
    backend: Box<dyn Backend>,
    cache: FileInfoCache,
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
            cache: FileInfoCache::new(config.hash_algo),
            config,
            backend,
            trimmed_for: std::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    pub fn upload_dir(&self) -> &Path {
        &self.config.roots[0]
    }

    pub fn snapshot(&self) -> std::io::Result<Arc<Snapshot>> {
        let snapshot = self.backend.snapshot()?;
        let mut trimmed_for = self.trimmed_for.lock().unwrap_or_else(|e| e.into_inner());
        if !trimmed_for
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, &snapshot))
        {
            self.cache.retain_only(snapshot.files());
            *trimmed_for = Some(snapshot.clone());
        }
        Ok(snapshot)
    }

    /// `file` as the disk holds it now, or `None` if it is gone. Needed because writing into
    /// an existing file (`cp` onto its name) moves no directory timestamp, so a listing can
    /// hold the identity of an older version.
    pub fn as_on_disk(&self, file: &Arc<DistFile>) -> std::io::Result<Option<Arc<DistFile>>> {
        match std::fs::metadata(&file.path) {
            Ok(metadata) if FileIdentity::of(&metadata) == file.identity => Ok(Some(file.clone())),
            Ok(metadata) if metadata.is_file() => Ok(Some(Arc::new(DistFile {
                identity: FileIdentity::of(&metadata),
                ..DistFile::clone(file)
            }))),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// What the index advertises about a file; computed once per file version.
    pub fn details(&self, file: &DistFile) -> std::io::Result<Arc<FileDetails>> {
        self.cache.details(file)
    }

    pub fn cache(&self) -> &FileInfoCache {
        &self.cache
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
                Ok(meta) if meta.is_file() => {
                    return Ok(Some(DistFile {
                        name,
                        path,
                        relative_path: relative_path.to_owned(),
                        identity: FileIdentity::of(&meta),
                    }))
                }
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                // A path no directory can hold is not here either.
                Err(err)
                    if matches!(err.raw_os_error(), Some(libc::ENOTDIR | libc::ENAMETOOLONG)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(None)
    }

    /// Deletes every file of `project` at `version` (compared as PEP 440 versions, so `1.0`
    /// and `1.0.0` are one version). Returns the filenames removed.
    pub fn remove(&self, project: &ProjectName, version: &str) -> Result<Vec<String>, IndexError> {
        let wanted: pep440_rs::Version =
            version.parse().map_err(|_| IndexError::InvalidVersion {
                version: version.to_owned(),
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
