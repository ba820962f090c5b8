//! Uploads: nothing half-written is ever visible, nothing acknowledged is ever lost.
//!
//! The file is streamed into a hidden temp file in the upload directory (listings skip hidden
//! names), hashed on the way, fsynced, then published with `link()`, which fails if the name
//! exists: of two processes racing for one filename, exactly one wins, on a local disk as on
//! NFS. The temp file is removed when dropped, so an upload that fails or is cancelled leaves
//! nothing behind; one whose process was killed leaves a hidden file that [`sweep_stale`]
//! removes once it is old.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::metadata::{upload_metadata, DistMetadata};
use super::{DistFile, FileIdentity, Index};
use crate::digest::{hash_file, HashAlgo, Md5Lane, Sha256Blake2Lane, UploadDigests};
use crate::names::{DistFilename, NameError, ProjectName, MAX_FILENAME_BYTES};

/// Every temp file starts with this; listings never show it (it is hidden) and the sweeper
/// only ever deletes files named so.
pub const TEMP_PREFIX: &str = ".wheelhouse-upload-";

/// How many chunks may wait for each lane of an upload: bounds the memory of an upload whose
/// client is faster than the disk or the hashing. Deeper queues bought no speed here, and at
/// 16 chunks of up to 1 MiB a 1 GiB upload raised peak RSS by 23 MiB instead of 4.
const LANE_DEPTH: usize = 2;

/// Writes reach the disk in pieces this big, whatever the size of the chunks that arrive.
const WRITE_BUFFER: usize = 256 * 1024;

/// An upload being received. Each chunk goes to two lanes at once: one writes it and computes
/// md5, the other computes sha256 and blake2b-256. On one thread the three digests held a 100 MB
/// upload to about 200 MiB/s; in two lanes they use two cores.
///
/// The temp file carries an open-file-description lock for as long as the upload lives, so
/// that [`sweep_stale`] on any host sharing the directory can tell a slow upload from one whose
/// process died.
pub struct StagedUpload {
    temp: NamedTempFile,
    writer: Lane<WriterState>,
    hasher: Lane<Sha256Blake2Lane>,
    size: u64,
}

/// The writing lane's state, handed to each blocking step and back.
struct WriterState {
    out: BufWriter<std::fs::File>,
    md5: Md5Lane,
}

/// An async task fed chunks through a bounded channel. It waits for chunks on the runtime and
/// takes a blocking thread only to process one: a client that stalls mid-upload must hold no
/// blocking thread (with a thread per lane waiting in `blocking_recv`, 256 stalled uploads took
/// all of tokio's 512 and froze every route).
struct Lane<T> {
    chunks: mpsc::Sender<Bytes>,
    done: JoinHandle<std::io::Result<T>>,
}

/// A lane or the fsync that panicked or was cancelled, as the upload's I/O error.
fn task_failed(err: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(format!("upload task failed: {err}"))
}

impl<T: Send + 'static> Lane<T> {
    fn spawn(state: T, step: fn(&mut T, &[u8]) -> std::io::Result<()>) -> Self {
        let (chunks, mut received) = mpsc::channel::<Bytes>(LANE_DEPTH);
        let done = tokio::spawn(async move {
            let mut state = state;
            while let Some(chunk) = received.recv().await {
                state = tokio::task::spawn_blocking(move || {
                    step(&mut state, &chunk)?;
                    Ok::<_, std::io::Error>(state)
                })
                .await
                .map_err(task_failed)??;
            }
            Ok(state)
        });
        Self { chunks, done }
    }

    /// What the task returned once its input ends.
    async fn end(self) -> std::io::Result<T> {
        drop(self.chunks);
        self.done.await.map_err(task_failed)?
    }

    /// Why a lane that refused a chunk stopped: only an ended task is awaited here.
    async fn failure(&mut self, which: &str) -> std::io::Error {
        match (&mut self.done).await {
            Ok(Err(err)) => err,
            Ok(Ok(_)) => std::io::Error::other(format!("the upload {which} stopped early")),
            Err(err) => task_failed(err),
        }
    }
}

impl StagedUpload {
    /// Creates and locks the temp file and starts the lanes; must run inside the tokio runtime.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        // A published file is an ordinary file of the directory: the umask decides who may read
        // it (another UID, a backup agent, a static file server), not tempfile's private 0600.
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(".part")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)?;
        super::lock::hold(temp.as_file())?;
        let file = temp.as_file().try_clone()?;
        let writer = Lane::spawn(
            WriterState {
                out: BufWriter::with_capacity(WRITE_BUFFER, file),
                md5: Md5Lane::default(),
            },
            |state, chunk| {
                state.md5.update(chunk);
                state.out.write_all(chunk)
            },
        );
        let hasher = Lane::spawn(Sha256Blake2Lane::default(), |digests, chunk| {
            digests.update(chunk);
            Ok(())
        });
        Ok(Self {
            temp,
            writer,
            hasher,
            size: 0,
        })
    }

    /// Hands a chunk to both lanes, waiting while either is full. After an error the upload
    /// is failed and must be dropped.
    pub async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.size += chunk.len() as u64;
        let written = self.writer.chunks.send(chunk.clone()).await;
        let hashed = self.hasher.chunks.send(chunk).await;
        // A lane that refuses a chunk has ended: the writer because a write failed (the disk
        // is full, say), either because it panicked.
        if written.is_err() {
            return Err(self.writer.failure("writer").await);
        }
        if hashed.is_err() {
            return Err(self.hasher.failure("hasher").await);
        }
        Ok(())
    }

    /// Makes the bytes durable before anything can point at them.
    pub async fn finish(self) -> std::io::Result<ReceivedUpload> {
        let WriterState { out, md5 } = self.writer.end().await?;
        let file = out.into_inner().map_err(|err| err.into_error())?;
        let rest = self.hasher.end().await?;
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(task_failed)??;
        Ok(ReceivedUpload {
            temp: self.temp,
            digests: UploadDigests::from_lanes(md5, rest),
            size: self.size,
        })
    }
}

/// A complete, durable upload that is not yet visible.
pub struct ReceivedUpload {
    temp: NamedTempFile,
    pub digests: UploadDigests,
    pub size: u64,
}

/// What the client said about the file it sent.
#[derive(Debug, Clone, Default)]
pub struct UploadClaim {
    /// The `name` form field.
    pub project: Option<ProjectName>,
    pub filename: String,
    pub md5_digest: Option<String>,
    pub sha256_digest: Option<String>,
    pub blake2_256_digest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    InvalidFilename(#[from] NameError),
    #[error("the filename {filename:?} is for project {in_filename:?}, but the upload's name field says {name_field:?}")]
    ProjectMismatch {
        filename: String,
        in_filename: String,
        name_field: String,
    },
    #[error(
        "the {field} sent for {filename:?} is {claimed:?}, but the file received has {actual:?}"
    )]
    DigestMismatch {
        filename: String,
        field: &'static str,
        claimed: String,
        actual: String,
    },
    #[error("the sdist filename {filename:?} does not read as project {project:?}: the version is taken to start at the first '-' followed by a digit; upload it as {pep625:?} (its PEP 625 name)")]
    AmbiguousSdistName {
        filename: String,
        project: String,
        pep625: String,
    },
    #[error("{filename:?} is refused: {source}")]
    Archive {
        filename: String,
        source: super::archive::ArchiveError,
    },
    #[error(
        "file {existing:?} already exists{}",
        other_spelling(filename, existing)
    )]
    AlreadyExists { filename: String, existing: String },
    #[error("file {existing:?} holds the release of {filename:?} in another package directory: only files under the upload directory can be overwritten")]
    OutsideUploadDir { filename: String, existing: String },
    #[error("storing the upload: {0}")]
    Io(#[from] std::io::Error),
}

impl Index {
    /// Validates an upload against what the client claimed and publishes it. Blocking.
    pub fn publish(
        &self,
        received: ReceivedUpload,
        claim: &UploadClaim,
    ) -> Result<DistFilename, UploadError> {
        let name = parse_claimed_filename(claim)?;
        let digests = &received.digests;
        for (field, claimed, actual) in [
            ("md5_digest", &claim.md5_digest, &digests.md5),
            ("sha256_digest", &claim.sha256_digest, &digests.sha256),
            (
                "blake2_256_digest",
                &claim.blake2_256_digest,
                &digests.blake2_256,
            ),
        ] {
            if let Some(claimed) = claimed.as_deref().filter(|c| !c.is_empty()) {
                if !claimed.eq_ignore_ascii_case(actual) {
                    return Err(UploadError::DigestMismatch {
                        filename: claim.filename.clone(),
                        field,
                        claimed: claimed.to_owned(),
                        actual: actual.clone(),
                    });
                }
            }
        }
        let metadata = upload_metadata(received.temp.path(), name.kind()).map_err(|source| {
            UploadError::Archive {
                filename: claim.filename.clone(),
                source,
            }
        })?;
        let snapshot = self.snapshot()?;
        let key = name.release_key();
        // Every spelling of this release file that is served now (the snapshot lists each
        // filename once): a second spelling would be a second copy under the project's page.
        let served: Vec<&DistFile> = snapshot
            .project(name.project())
            .unwrap_or_default()
            .iter()
            .filter(|file| file.name.release_key() == key)
            .map(|file| &**file)
            .collect();
        let target = if self.config().overwrite {
            self.overwrite(received.temp, &name, &served)?
        } else {
            if let Some(existing) = served.first() {
                return Err(already_exists(&name, existing.name.filename()));
            }
            let target = self.upload_dir().join(name.filename());
            // `link()` settles a race between processes for one filename.
            match received.temp.persist_noclobber(&target) {
                Ok(_) => {}
                Err(err) if err.error.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(already_exists(&name, name.filename()))
                }
                Err(err) => return Err(UploadError::Io(err.error)),
            }
            // The new directory entry must survive a crash too, or a 200 could be forgotten.
            std::fs::File::open(self.upload_dir())?.sync_all()?;
            target
        };
        // The digests first: a request listing the file then finds them.
        self.remember(&target, &name, &received.digests, &metadata);
        self.backend.published(&target);
        Ok(name)
    }

    /// Seeds the cache with the upload's digests and metadata, so that listing the new file
    /// costs no re-read.
    fn remember(
        &self,
        path: &Path,
        name: &DistFilename,
        digests: &UploadDigests,
        metadata: &DistMetadata,
    ) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let file = DistFile {
            name: name.clone(),
            path: path.to_owned(),
            relative_path: super::relative_path(self.upload_dir(), path),
            identity: FileIdentity::of(&meta),
        };
        let link_hex = match self.cache().hash_algo() {
            Some(HashAlgo::Sha256) => Some(digests.sha256.clone()),
            Some(HashAlgo::Md5) => Some(digests.md5.clone()),
            Some(other) => match hash_file(path, &[other]) {
                Ok(mut hex) => hex.pop(),
                Err(_) => return,
            },
            None => None,
        };
        self.cache().insert(&file, link_hex, metadata);
    }

    /// `-o`: the upload takes the place of the file the index serves for this release (in
    /// the subdirectory it is in), and of any other spelling of it, so that one copy is listed.
    /// Returns where the upload now is.
    fn overwrite(
        &self,
        temp: NamedTempFile,
        name: &DistFilename,
        served: &[&DistFile],
    ) -> Result<PathBuf, UploadError> {
        if let Some(outside) = served
            .iter()
            .find(|file| !file.path.starts_with(self.upload_dir()))
        {
            return Err(UploadError::OutsideUploadDir {
                filename: name.filename().to_owned(),
                existing: outside.relative_path.clone(),
            });
        }
        let dir = served
            .first()
            .and_then(|file| file.path.parent())
            .unwrap_or(self.upload_dir())
            .to_owned();
        let target = dir.join(name.filename());
        // A rename: readers see the old file or the new one, never neither.
        temp.persist(&target)
            .map_err(|err| UploadError::Io(err.error))?;
        for file in served.iter().filter(|file| file.path != target) {
            match std::fs::remove_file(&file.path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(UploadError::Io(err)),
            }
        }
        // The new directory entries must survive a crash too, or a 200 could be forgotten.
        std::fs::File::open(&dir)?.sync_all()?;
        for old_dir in served.iter().filter_map(|file| file.path.parent()) {
            if old_dir != dir {
                std::fs::File::open(old_dir)?.sync_all()?;
            }
        }
        Ok(target)
    }
}

fn already_exists(uploaded: &DistFilename, existing: &str) -> UploadError {
    UploadError::AlreadyExists {
        filename: uploaded.filename().to_owned(),
        existing: existing.to_owned(),
    }
}

/// For a conflict under another spelling, which upload it refused.
fn other_spelling(uploaded: &str, existing: &str) -> String {
    if uploaded == existing {
        String::new()
    } else {
        format!(" and holds the same release file as {uploaded:?}")
    }
}

/// The filename, parsed the one way every reader parses it; it must name the project the
/// `name` field names, or the upload would be listed elsewhere or nowhere.
fn parse_claimed_filename(claim: &UploadClaim) -> Result<DistFilename, UploadError> {
    let parsed = DistFilename::parse(&claim.filename);
    // An over-long name is refused as such, before any other message quotes it whole.
    let Some(project) = claim
        .project
        .as_ref()
        .filter(|_| claim.filename.len() <= MAX_FILENAME_BYTES)
    else {
        return Ok(parsed?);
    };
    if let Ok(name) = &parsed {
        if name.project() == project {
            return parsed.map_err(Into::into);
        }
    }
    if let Some(pep625) = DistFilename::pep625_sdist_name(&claim.filename, project) {
        return Err(UploadError::AmbiguousSdistName {
            filename: claim.filename.clone(),
            project: project.to_string(),
            pep625,
        });
    }
    let name = parsed?;
    Err(UploadError::ProjectMismatch {
        filename: claim.filename.clone(),
        in_filename: name.project().to_string(),
        name_field: project.to_string(),
    })
}

/// How often the index looks for temp files of uploads whose process died. Their locks
/// decide, not their age (see [`sweep_stale`]).
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// A temp file younger than this is spared: its upload may not have locked it yet.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(60);

impl Index {
    /// Removes the temp files of uploads whose process died, now and every
    /// [`SWEEP_INTERVAL`] after, on the blocking pool. Must run inside the tokio runtime.
    pub fn start_sweeping(&self) {
        let upload_dir = self.config.roots[0].clone();
        match sweep_stale(&upload_dir, SWEEP_MIN_AGE) {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} temp file(s) of uploads whose process died"),
            Err(err) => tracing::warn!("sweeping {}: {err}", upload_dir.display()),
        }
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_INTERVAL);
            every.tick().await;
            loop {
                every.tick().await;
                let dir = upload_dir.clone();
                let _ = tokio::task::spawn_blocking(move || sweep_stale(&dir, SWEEP_MIN_AGE)).await;
            }
        });
    }
}

/// Deletes temp files of uploads whose process died: those whose lock (see
/// [`StagedUpload`]) nobody holds. Age decides nothing about a locked file, however slow its
/// upload; `min_age` only spares a file created a moment ago, before its upload could lock it.
/// Returns how many it removed.
pub fn sweep_stale(dir: &Path, min_age: Duration) -> std::io::Result<usize> {
    let mut removed = 0;
    let now = SystemTime::now();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        // Opened for writing because an exclusive lock needs it; never written.
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        let young = file
            .metadata()
            .ok()
            .and_then(|meta| meta.modified().ok())
            .and_then(|modified| now.duration_since(modified).ok())
            .is_none_or(|age| age < min_age);
        if young {
            continue;
        }
        match super::lock::try_exclusive(&file) {
            // Deleted while this process holds the lock, so no upload can have taken it since.
            Ok(super::lock::Taken::Yes) => {
                if std::fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
            Ok(super::lock::Taken::HeldElsewhere) => {}
            Err(err) => tracing::warn!("cannot test the lock of {}: {err}", path.display()),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(project: &str, filename: &str) -> UploadClaim {
        UploadClaim {
            project: Some(ProjectName::new(project).unwrap()),
            filename: filename.to_owned(),
            ..UploadClaim::default()
        }
    }

    #[test]
    fn err_project_mismatch_names_both() {
        let err = parse_claimed_filename(&claim("other", "foo-1.0-py3-none-any.whl")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the filename \"foo-1.0-py3-none-any.whl\" is for project \"foo\", but the upload's name field says \"other\""
        );
        let err = parse_claimed_filename(&claim("other", "foo-1.0.tar.gz")).unwrap_err();
        assert!(matches!(err, UploadError::ProjectMismatch { .. }), "{err}");
    }

    #[test]
    fn the_name_field_never_changes_how_a_filename_reads() {
        let name = parse_claimed_filename(&claim("Foo_Bar", "foo-bar-2.0.tar.gz")).unwrap();
        assert_eq!(name.version(), "2.0");
        let name = parse_claimed_filename(&claim("foo-2", "foo_2-1.tar.gz")).unwrap();
        assert_eq!((name.project().as_str(), name.version()), ("foo-2", "1"));
    }

    #[test]
    fn err_ambiguous_sdist_names_its_pep625_spelling() {
        let err = parse_claimed_filename(&claim("foo-2", "foo-2-1.tar.gz")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the sdist filename \"foo-2-1.tar.gz\" does not read as project \"foo-2\": the \
             version is taken to start at the first '-' followed by a digit; upload it as \
             \"foo_2-1.tar.gz\" (its PEP 625 name)"
        );
        let err = parse_claimed_filename(&claim(
            "python-3parclient",
            "python-3parclient-4.2.12.tar.gz",
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("\"python_3parclient-4.2.12.tar.gz\""),
            "{err}"
        );
    }

    #[tokio::test]
    async fn staged_upload_writes_and_hashes_every_chunk_in_order() {
        let dir = tempfile::tempdir().unwrap();
        // Uneven chunks, more of them than a lane holds, adding up to more than one write
        // buffer.
        let body: Vec<u8> = (0..3 * WRITE_BUFFER + 12_345)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut staged = StagedUpload::create(dir.path()).unwrap();
        for chunk in body.chunks(7_777) {
            staged.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let received = staged.finish().await.unwrap();
        assert_eq!(received.size, body.len() as u64);
        assert_eq!(std::fs::read(received.temp.path()).unwrap(), body);
        let expected = |algo| crate::digest::hex_digest(algo, &body);
        assert_eq!(received.digests.md5, expected(HashAlgo::Md5));
        assert_eq!(received.digests.sha256, expected(HashAlgo::Sha256));
        // The temp file is hidden until published, and gone if never published.
        let temp_path = received.temp.path().to_owned();
        assert!(temp_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(TEMP_PREFIX));
        drop(received);
        assert!(!temp_path.exists());
    }

    #[tokio::test]
    async fn sweep_spares_a_live_upload_however_old_and_removes_a_dead_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = StagedUpload::create(dir.path()).unwrap();
        live.write(Bytes::from_static(b"the first bytes"))
            .await
            .unwrap();
        let live_path = live.temp.path().to_owned();
        // A temp file left by a process that died: same name shape, no lock.
        let dead = dir.path().join(format!("{TEMP_PREFIX}dead.part"));
        std::fs::write(&dead, b"partial").unwrap();
        let keep = dir.path().join("foo-1.0.tar.gz");
        std::fs::write(&keep, b"whole").unwrap();

        // Nothing is old enough yet.
        assert_eq!(
            sweep_stale(dir.path(), Duration::from_secs(3600)).unwrap(),
            0
        );
        // Every file counts as old: only the unlocked temp file goes.
        assert_eq!(sweep_stale(dir.path(), Duration::ZERO).unwrap(), 1);
        assert!(!dead.exists());
        assert!(keep.exists());
        assert!(live_path.exists(), "the sweep deleted a live upload");

        // The live upload goes on and completes after the sweep.
        live.write(Bytes::from_static(b" and the rest"))
            .await
            .unwrap();
        let received = live.finish().await.unwrap();
        assert_eq!(
            std::fs::read(received.temp.path()).unwrap(),
            b"the first bytes and the rest"
        );
    }
}
