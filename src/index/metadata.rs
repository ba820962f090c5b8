//! Core metadata read out of distribution files: the wheel's `*.dist-info/METADATA` (served as
//! PEP 658 `<file>.metadata`) and the `Requires-Python` header of wheels and sdists.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::names::DistKind;

/// Upper bound on a METADATA/PKG-INFO file: a long description can be large, but a "metadata"
/// file of more than this is not one, and reading it whole would let one file exhaust memory.
const MAX_METADATA_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid zip archive: {source}")]
    Zip {
        path: String,
        source: zip::result::ZipError,
    },
    #[error("{path} has no top-level *.dist-info/METADATA")]
    Missing { path: String },
    #[error("{path}: its metadata file is larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge { path: String },
}

/// Returns the exact bytes of a wheel's `*.dist-info/METADATA`.
pub fn wheel_metadata(path: &Path) -> Result<Vec<u8>, MetadataError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| MetadataError::Io {
        path: shown.clone(),
        source,
    })?;
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|source| MetadataError::Zip {
            path: shown.clone(),
            source,
        })?;
    let entry_name = archive
        .file_names()
        .find(|name| {
            name.split_once('/')
                .is_some_and(|(dir, rest)| dir.ends_with(".dist-info") && rest == "METADATA")
        })
        .map(str::to_owned)
        .ok_or_else(|| MetadataError::Missing {
            path: shown.clone(),
        })?;
    let entry = archive
        .by_name(&entry_name)
        .map_err(|source| MetadataError::Zip {
            path: shown.clone(),
            source,
        })?;
    read_bounded(entry, &shown)
}

fn read_bounded(reader: impl Read, shown: &str) -> Result<Vec<u8>, MetadataError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| MetadataError::Io {
            path: shown.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge {
            path: shown.to_owned(),
        });
    }
    Ok(bytes)
}

/// Reads `Requires-Python` from an sdist's top-level `PKG-INFO` (.tar.gz and .zip; other
/// archive formats are rare enough that they go without).
pub fn sdist_requires_python(path: &Path) -> Result<Option<String>, MetadataError> {
    let shown = path.display().to_string();
    let io = |source| MetadataError::Io {
        path: shown.clone(),
        source,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let is_top_level_pkg_info = |entry: &str| {
        let entry = entry.trim_start_matches("./");
        entry
            .split_once('/')
            .is_some_and(|(_, rest)| rest == "PKG-INFO")
    };
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let file = File::open(path).map_err(io)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
        for entry in archive.entries().map_err(io)? {
            let entry = entry.map_err(io)?;
            let entry_path = entry.path().map_err(io)?.to_string_lossy().into_owned();
            if is_top_level_pkg_info(&entry_path) {
                let bytes = read_bounded(entry, &shown)?;
                return Ok(requires_python(&bytes));
            }
        }
        Ok(None)
    } else if name.ends_with(".zip") {
        let file = File::open(path).map_err(io)?;
        let mut archive =
            zip::ZipArchive::new(BufReader::new(file)).map_err(|source| MetadataError::Zip {
                path: shown.clone(),
                source,
            })?;
        let Some(entry_name) = archive
            .file_names()
            .find(|n| is_top_level_pkg_info(n))
            .map(str::to_owned)
        else {
            return Ok(None);
        };
        let entry = archive
            .by_name(&entry_name)
            .map_err(|source| MetadataError::Zip {
                path: shown.clone(),
                source,
            })?;
        Ok(requires_python(&read_bounded(entry, &shown)?))
    } else {
        Ok(None)
    }
}

/// Metadata that `metadata_for` reads from one distribution file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistMetadata {
    /// The exact METADATA bytes of a wheel (PEP 658); `None` for sdists.
    pub core_metadata: Option<Vec<u8>>,
    pub requires_python: Option<String>,
}

/// Reads what the index advertises about a file. A file whose archive is broken still gets
/// listed (pip will tell the user what is wrong with it); it only goes without metadata.
pub fn metadata_for(path: &Path, kind: DistKind) -> DistMetadata {
    let result = match kind {
        DistKind::Wheel => wheel_metadata(path).map(|bytes| DistMetadata {
            requires_python: requires_python(&bytes),
            core_metadata: Some(bytes),
        }),
        DistKind::Sdist => sdist_requires_python(path).map(|requires_python| DistMetadata {
            core_metadata: None,
            requires_python,
        }),
    };
    result.unwrap_or_else(|err| {
        tracing::warn!("no metadata for {}: {err}", path.display());
        DistMetadata::default()
    })
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
