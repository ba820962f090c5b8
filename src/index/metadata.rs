//! Core metadata read out of distribution files: the wheel's `*.dist-info/METADATA` (served as
//! PEP 658 `<file>.metadata`) and the `Requires-Python` header of wheels and sdists.

use std::io::BufReader;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use super::archive::{self, ArchiveError, EntryLocation};
use super::{open_regular, FileIdentity};
use crate::names::DistKind;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Archive { path: String, source: ArchiveError },
    #[error("{path} has no top-level *.dist-info/METADATA")]
    Missing { path: String },
    #[error(
        "{path}: its metadata file is larger than {} bytes",
        archive::MAX_ENTRY_BYTES
    )]
    TooLarge { path: String },
}

/// Archives read at once, whoever asks (a listing that meets a new file, a `.metadata`
/// request, an upload's check). A read walks a central directory of up to
/// [`archive::MAX_DIRECTORY_BYTES`] and holds a metadata file of up to 16 MiB: two at a time
/// keep that to a few tens of MiB of the appliance's 512 MiB, and leave a core of its two to
/// every other request, however many new wheels are asked for at once.
const ARCHIVE_READS_AT_ONCE: usize = 2;

static ARCHIVE_READS: Slots = Slots::new(ARCHIVE_READS_AT_ONCE);

/// A counting semaphore for blocking threads (the archive reads run on tokio's blocking
/// pool, where an async semaphore cannot be awaited).
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    const fn new(slots: usize) -> Self {
        Self {
            free: Mutex::new(slots),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

fn is_wheel_metadata(name: &str) -> bool {
    name.split_once('/')
        .is_some_and(|(dir, rest)| dir.ends_with(".dist-info") && rest == "METADATA")
}

fn is_top_level_pkg_info(entry: &str) -> bool {
    entry
        .trim_start_matches("./")
        .split_once('/')
        .is_some_and(|(_, rest)| rest == "PKG-INFO")
}

/// A wheel's METADATA bytes, and where they are in the file to read them again cheaply.
pub fn wheel_metadata(path: &Path) -> Result<(Vec<u8>, EntryLocation), MetadataError> {
    let shown = path.display().to_string();
    let archive_error = |source| MetadataError::Archive {
        path: shown.clone(),
        source,
    };
    let _slot = ARCHIVE_READS.take();
    let mut file = open_regular(path).map_err(|source| MetadataError::Io {
        path: shown.clone(),
        source,
    })?;
    let (name, at) = archive::find_entry(&mut file, is_wheel_metadata)
        .map_err(archive_error)?
        .ok_or_else(|| MetadataError::Missing {
            path: shown.clone(),
        })?;
    let bytes = archive::read_entry(&mut file, &name, &at).map_err(archive_error)?;
    Ok((bytes, at))
}

/// Reads a wheel's METADATA again from where [`wheel_metadata`] found it: a small read, no
/// directory walk. `None` when `path` is no longer the version `identity` describes, or no
/// longer matches what was found in it.
pub fn wheel_metadata_at(
    path: &Path,
    identity: &FileIdentity,
    at: &EntryLocation,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut file = open_regular(path)?;
    if FileIdentity::of(&file.metadata()?) != *identity {
        return Ok(None);
    }
    match archive::read_entry(&mut file, "METADATA", at) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ArchiveError::Io(err)) => Err(err),
        Err(_) => Ok(None),
    }
}

/// Reads `Requires-Python` from an sdist's top-level `PKG-INFO` (.tar.gz and .zip; other
/// archive formats are rare enough that they go without).
pub fn sdist_requires_python(path: &Path) -> Result<Option<String>, MetadataError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let io = |source| MetadataError::Io {
        path: shown.clone(),
        source,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let file = open_regular(path).map_err(io)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
        for entry in archive.entries().map_err(io)? {
            let entry = entry.map_err(io)?;
            let entry_path = entry.path().map_err(io)?.to_string_lossy().into_owned();
            if is_top_level_pkg_info(&entry_path) {
                let mut bytes = Vec::new();
                entry
                    .take(archive::MAX_ENTRY_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(io)?;
                if bytes.len() as u64 > archive::MAX_ENTRY_BYTES {
                    return Err(MetadataError::TooLarge { path: shown });
                }
                return Ok(requires_python(&bytes));
            }
        }
        Ok(None)
    } else if name.ends_with(".zip") {
        let archive_error = |source| MetadataError::Archive {
            path: shown.clone(),
            source,
        };
        let _slot = ARCHIVE_READS.take();
        let mut file = open_regular(path).map_err(io)?;
        let Some((entry, at)) =
            archive::find_entry(&mut file, is_top_level_pkg_info).map_err(archive_error)?
        else {
            return Ok(None);
        };
        let bytes = archive::read_entry(&mut file, &entry, &at).map_err(archive_error)?;
        Ok(requires_python(&bytes))
    } else {
        Ok(None)
    }
}

/// Metadata that `metadata_for` reads from one distribution file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistMetadata {
    /// The exact METADATA bytes of a wheel (PEP 658); `None` for sdists.
    pub core_metadata: Option<Vec<u8>>,
    /// Where those bytes are in the wheel.
    pub core_metadata_at: Option<EntryLocation>,
    pub requires_python: Option<String>,
}

/// Reads what the index advertises about a file. A file whose archive is broken still gets
/// listed (pip will tell the user what is wrong with it); it only goes without metadata.
pub fn metadata_for(path: &Path, kind: DistKind) -> DistMetadata {
    read_metadata(path, kind).unwrap_or_else(|err| without_metadata(path, &err))
}

/// [`metadata_for`] an upload, in the same walk of the archive: refuses a wheel whose archive
/// every later read would pay for (more than [`archive::MAX_ENTRIES`] entries, a central
/// directory over [`archive::MAX_DIRECTORY_BYTES`], or a METADATA over
/// [`archive::MAX_ENTRY_BYTES`]), never holding its central directory whole in memory. A
/// broken archive or one without METADATA passes: the index lists such a file without
/// metadata, as it does one placed in the directory by hand, and pip reports what is wrong.
pub fn upload_metadata(path: &Path, kind: DistKind) -> Result<DistMetadata, ArchiveError> {
    match read_metadata(path, kind) {
        Ok(metadata) => Ok(metadata),
        Err(MetadataError::Archive { source, .. })
            if kind == DistKind::Wheel
                && (source.is_over_a_limit() || matches!(source, ArchiveError::Io(_))) =>
        {
            Err(source)
        }
        Err(MetadataError::Io { source, .. }) if kind == DistKind::Wheel => {
            Err(ArchiveError::Io(source))
        }
        Err(err) => Ok(without_metadata(path, &err)),
    }
}

fn read_metadata(path: &Path, kind: DistKind) -> Result<DistMetadata, MetadataError> {
    match kind {
        DistKind::Wheel => wheel_metadata(path).map(|(bytes, at)| DistMetadata {
            requires_python: requires_python(&bytes),
            core_metadata: Some(bytes),
            core_metadata_at: Some(at),
        }),
        DistKind::Sdist => sdist_requires_python(path).map(|requires_python| DistMetadata {
            requires_python,
            ..DistMetadata::default()
        }),
    }
}

fn without_metadata(path: &Path, err: &MetadataError) -> DistMetadata {
    tracing::warn!("no metadata for {}: {err}", path.display());
    DistMetadata::default()
}

/// The `Requires-Python` header of an RFC 822-style metadata file (headers end at the first
/// blank line; the body is the long description and may contain anything).
pub fn requires_python(metadata: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(metadata);
    text.lines()
        .take_while(|line| !line.trim().is_empty())
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case("requires-python")
                .then(|| value.trim().to_owned())
        })
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_python_stops_at_body() {
        let meta = b"Metadata-Version: 2.1\nName: x\nRequires-Python: >=3.8, <4\n\nRequires-Python: nope\n";
        assert_eq!(requires_python(meta).as_deref(), Some(">=3.8, <4"));
        let body_only = b"Metadata-Version: 2.1\nName: x\n\nRequires-Python: >=3\n";
        assert_eq!(requires_python(body_only), None);
    }
}
