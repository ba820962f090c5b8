//! The scanning backend: walks every package directory on every call (pypiserver's
//! `simple-dir`). Always consistent with the disk, at a cost that grows with the tree.

use std::path::PathBuf;
use std::sync::Arc;

use super::{classify, is_gone, real_roots, Backend, Entry, Snapshot, Unreadable};

pub struct ScanBackend {
    roots: Vec<PathBuf>,
    real_roots: Vec<PathBuf>,
    unreadable: Unreadable,
}

impl ScanBackend {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            real_roots: real_roots(&roots),
            roots,
            unreadable: Unreadable::default(),
        }
    }
}

impl Backend for ScanBackend {
    /// Entries follow [`classify`], the rule of every backend; a directory that cannot be
    /// read is left out (and logged once) and the rest is listed.
    fn snapshot(&self) -> std::io::Result<Arc<Snapshot>> {
        let mut files = Vec::new();
        for root in &self.roots {
            let mut pending = vec![root.clone()];
            while let Some(dir) = pending.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    // A missing root, or a directory removed since its parent was read.
                    Err(err) if is_gone(&err) => continue,
                    Err(err) => {
                        self.unreadable.skip(&dir, &err);
                        continue;
                    }
                };
                for entry in entries {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(err) => {
                            self.unreadable.skip(&dir, &err);
                            break;
                        }
                    };
                    match classify(root, &self.real_roots, &entry, &self.unreadable) {
                        Entry::Dir(path) => pending.push(path),
                        Entry::File(file) => files.push(*file),
                        Entry::Skipped => {}
                    }
                }
            }
        }
        Ok(Arc::new(Snapshot::from_found(
            &self.roots,
            files.into_iter().map(Arc::new),
        )))
    }
}
