//! Uploads: nothing half-written is ever visible, nothing acknowledged is ever lost.
//!
//! The file is streamed into a hidden temp file in the upload directory (listings skip hidden
//! names), hashed on the way, fsynced, then published with `link()`, which fails if the name
//! exists: of two processes racing for one filename, exactly one wins, on a local disk as on
//! NFS. The temp file is removed when dropped, so an upload that fails or is cancelled leaves
//! nothing behind; one whose process was killed leaves a hidden file that [`sweep_stale`]
//! removes once it is old.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::metadata::metadata_for;
use super::{DistFile, FileIdentity, Index};
use crate::digest::{hash_file, HashAlgo, Md5Lane, Sha256Blake2Lane, UploadDigests};
use crate::names::{DistFilename, NameError, ProjectName};

/// Every temp file starts with this; listings never show it (it is hidden) and the sweeper
/// only ever deletes files named so.
pub const TEMP_PREFIX: &str = ".wheelhouse-upload-";

/// How many chunks may wait for each lane of an upload: bounds the memory of an upload whose
/// client is faster than the disk or the hashing. Deeper queues bought no speed here, and at
/// 16 chunks of up to 1 MiB a 1 GiB upload raised peak RSS by 23 MiB instead of 4.
const LANE_DEPTH: usize = 2;

/// Writes reach the disk in pieces this big, whatever the size of the chunks that arrive.
const WRITE_BUFFER: usize = 256 * 1024;

/// An upload being received. Each chunk goes to two blocking tasks at once: one writes it and
/// computes md5, the other computes sha256 and blake2b-256. On one thread the three digests
/// held a 100 MB upload to about 200 MiB/s; in two lanes they use two cores.
pub struct StagedUpload {
    temp: NamedTempFile,
    writer: Lane<std::io::Result<(std::fs::File, Md5Lane)>>,
    hasher: Lane<Sha256Blake2Lane>,
    size: u64,
}

/// A blocking task fed chunks through a bounded channel.
struct Lane<T> {
    chunks: mpsc::Sender<Bytes>,
    done: JoinHandle<T>,
}

/// A lane or the fsync that panicked or was cancelled, as the upload's I/O error.
fn task_failed(err: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(format!("upload task failed: {err}"))
}

impl<T: Send + 'static> Lane<T> {
    fn spawn(work: impl FnOnce(mpsc::Receiver<Bytes>) -> T + Send + 'static) -> Self {
        let (chunks, received) = mpsc::channel(LANE_DEPTH);
        Self {
            chunks,
            done: tokio::task::spawn_blocking(move || work(received)),
        }
    }

    /// What the task returned once its input ends.
    async fn end(self) -> std::io::Result<T> {
        drop(self.chunks);
        self.done.await.map_err(task_failed)
    }
}

impl StagedUpload {
    /// Creates the temp file and starts the lanes; must run inside the tokio runtime.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(".part")
            .tempfile_in(dir)?;
        let file = temp.as_file().try_clone()?;
        let writer = Lane::spawn(move |mut chunks| {
            let mut md5 = Md5Lane::default();
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
            while let Some(chunk) = chunks.blocking_recv() {
                md5.update(&chunk);
                out.write_all(&chunk)?;
            }
            let file = out.into_inner().map_err(|err| err.into_error())?;
            Ok((file, md5))
        });
        let hasher = Lane::spawn(|mut chunks| {
            let mut digests = Sha256Blake2Lane::default();
            while let Some(chunk) = chunks.blocking_recv() {
                digests.update(&chunk);
            }
            digests
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
        // is full, say), either because it panicked. Only an ended task is awaited here.
        if written.is_err() {
            return Err(match (&mut self.writer.done).await {
                Ok(Err(err)) => err,
                Ok(Ok(_)) => std::io::Error::other("the upload writer stopped early"),
                Err(err) => task_failed(err),
            });
        }
        if hashed.is_err() {
            return Err(match (&mut self.hasher.done).await {
                Ok(_) => std::io::Error::other("the upload hasher stopped early"),
                Err(err) => task_failed(err),
            });
        }
        Ok(())
    }

    /// Makes the bytes durable before anything can point at them.
    pub async fn finish(self) -> std::io::Result<ReceivedUpload> {
        let (file, md5) = self.writer.end().await??;
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
    #[error("{filename:?} is refused: {source}")]
    Archive {
        filename: String,
        source: super::archive::ArchiveError,
    },
    #[error("file {filename:?} already exists")]
    AlreadyExists { filename: String },
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
        if name.kind() == crate::names::DistKind::Wheel {
            super::metadata::check_wheel_archive(received.temp.path()).map_err(|source| {
                UploadError::Archive {
                    filename: claim.filename.clone(),
                    source,
                }
            })?;
        }
        let target = self.upload_dir().join(name.filename());
        let already_exists = || UploadError::AlreadyExists {
            filename: name.filename().to_owned(),
        };
        if self.config().overwrite {
            received
                .temp
                .persist(&target)
                .map_err(|err| UploadError::Io(err.error))?;
        } else {
            // The same name in another package directory or a subdirectory would be served
            // under the same project page: refuse it too. `link()` below is what settles a race.
            if self.snapshot()?.find_filename(name.filename()).is_some() {
                return Err(already_exists());
            }
            match received.temp.persist_noclobber(&target) {
                Ok(_) => {}
                Err(err) if err.error.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(already_exists())
                }
                Err(err) => return Err(UploadError::Io(err.error)),
            }
        }
        // The new directory entry must survive a crash too, or a 200 could be forgotten.
        std::fs::File::open(self.upload_dir())?.sync_all()?;
        self.backend.invalidate();
        self.remember(&target, &name, &received.digests);
        Ok(name)
    }

    /// Seeds the cache with the upload's digests and metadata, so that listing the new file
    /// costs no re-read.
    fn remember(&self, path: &Path, name: &DistFilename, digests: &UploadDigests) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let file = DistFile {
            name: name.clone(),
            path: path.to_owned(),
            relative_path: name.filename().to_owned(),
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
        self.cache()
            .insert(&file, link_hex, &metadata_for(path, name.kind()));
    }
}

fn parse_claimed_filename(claim: &UploadClaim) -> Result<DistFilename, UploadError> {
    let Some(project) = &claim.project else {
        return Ok(DistFilename::parse(&claim.filename, None)?);
    };
    let mismatch = |in_filename: &ProjectName| UploadError::ProjectMismatch {
        filename: claim.filename.clone(),
        in_filename: in_filename.to_string(),
        name_field: project.to_string(),
    };
    match DistFilename::parse(&claim.filename, Some(project)) {
        Ok(name) if name.project() == project => Ok(name),
        Ok(name) => Err(mismatch(name.project())),
        Err(err) => match DistFilename::parse(&claim.filename, None) {
            Ok(guessed) if guessed.project() != project => Err(mismatch(guessed.project())),
            _ => Err(err.into()),
        },
    }
}

/// Deletes temp files of uploads whose process died, once they have not been written to for
/// `older_than` (a live upload writes continually, so its mtime stays fresh). Returns how
/// many it removed.
pub fn sweep_stale(dir: &Path, older_than: Duration) -> std::io::Result<usize> {
    let mut removed = 0;
    let now = SystemTime::now();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok());
        if age.is_some_and(|age| age >= older_than) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
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
    fn sdist_name_field_resolves_ambiguity() {
        let name = parse_claimed_filename(&claim("Foo_Bar", "foo-bar-2.0.tar.gz")).unwrap();
        assert_eq!(name.version(), "2.0");
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

    #[test]
    fn sweep_removes_only_old_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{TEMP_PREFIX}abc.part"));
        let keep = dir.path().join("foo-1.0.tar.gz");
        std::fs::write(&stale, b"partial").unwrap();
        std::fs::write(&keep, b"whole").unwrap();
        assert_eq!(
            sweep_stale(dir.path(), Duration::from_secs(3600)).unwrap(),
            0
        );
        assert_eq!(sweep_stale(dir.path(), Duration::ZERO).unwrap(), 1);
        assert!(!stale.exists());
        assert!(keep.exists());
    }
}
