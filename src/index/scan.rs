//! The scanning backend: walks every package directory on every call (pypiserver's
//! `simple-dir`). Always consistent with the disk, at a cost that grows with the tree.

use std::path::PathBuf;
use std::sync::Arc;

use glob::{MatchOptions, Pattern};

use super::{Backend, DistFile, FileIdentity, Snapshot};
use crate::names::DistFilename;

pub struct ScanBackend {
    roots: Vec<PathBuf>,
}

impl ScanBackend {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self { roots }
    }
}

/// Hidden entries are skipped: that is where uploads in progress live (see `upload`), and
/// dot-directories such as `.git` are never package stores.
const WALK: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

impl Backend for ScanBackend {
    fn snapshot(&self) -> std::io::Result<Arc<Snapshot>> {
        let mut files = Vec::new();
        for root in &self.roots {
            let pattern = format!("{}/**/*", Pattern::escape(&root.to_string_lossy()));
            let entries = glob::glob_with(&pattern, WALK)
                .map_err(|err| std::io::Error::other(format!("{pattern}: {err}")))?;
            for entry in entries {
                // A file deleted between the directory read and its stat is simply gone.
                let Ok(path) = entry else { continue };
                let Some(filename) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Ok(name) = DistFilename::parse(filename) else {
                    continue;
                };
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let Ok(relative) = path.strip_prefix(root) else {
                    continue;
                };
                let relative_path = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push(DistFile {
                    name,
                    path: path.clone(),
                    relative_path,
                    identity: FileIdentity::of(&meta),
                });
            }
        }
        Ok(Arc::new(Snapshot::from_found(
            &self.roots,
            files.into_iter().map(Arc::new),
        )))
    }
}
