//! Uploads: nothing half-written is ever visible, nothing acknowledged is ever lost.
//!
//! The file is streamed into a hidden temp file in the upload directory (listings skip hidden
//! names), hashed on the way, fsynced, then published with `link()`, which fails if the name
//! exists: of two processes racing for one filename, exactly one wins, on a local disk as on
//! NFS. The temp file is removed when dropped, so an upload that fails or is cancelled leaves
//! nothing behind; one whose process was killed leaves a hidden file that [`sweep_stale`]
//! removes once it is old.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;

use super::metadata::metadata_for;
use super::{DistFile, FileIdentity, Index};
use crate::digest::{hash_file, HashAlgo, UploadDigests, UploadHasher};
use crate::names::{DistFilename, NameError, ProjectName};

/// Every temp file starts with this; listings never show it (it is hidden) and the sweeper
/// only ever deletes files named so.
pub const TEMP_PREFIX: &str = ".wheelhouse-upload-";

/// An upload being received.
pub struct StagedUpload {
    temp: NamedTempFile,
    file: tokio::fs::File,
    hasher: UploadHasher,
    size: u64,
}

impl StagedUpload {
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .suffix(".part")
            .tempfile_in(dir)?;
        let file = tokio::fs::File::from_std(temp.as_file().try_clone()?);
        Ok(Self {
            temp,
            file,
            hasher: UploadHasher::default(),
            size: 0,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        self.file.write_all(chunk).await
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the bytes durable before anything can point at them.
    pub async fn finish(mut self) -> std::io::Result<ReceivedUpload> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        Ok(ReceivedUpload {
            temp: self.temp,
            digests: self.hasher.finish(),
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
