//! What the index serves at one moment: every distribution file, grouped by project.
//!
//! A snapshot is shared by every request that took it, so a change makes a new one. Its maps
//! are persistent (structure-sharing) so that a change of a few files costs a few tree paths,
//! not a copy of the whole index: a busy index makes a new snapshot for every file that lands.

use std::path::PathBuf;
use std::sync::Arc;

use super::DistFile;
use crate::names::ProjectName;

/// One project's files, in version order.
type ProjectFiles = Arc<Vec<Arc<DistFile>>>;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    projects: imbl::OrdMap<ProjectName, ProjectFiles>,
    by_filename: imbl::HashMap<String, Arc<DistFile>>,
    /// Files left out because a file of the same filename comes first (see `from_found`).
    /// While there are any, a change cannot be applied alone: the order decides.
    shadowed: usize,
    /// Replaced whenever the set of project names changes, and only then: the root index
    /// depends on nothing else.
    names: Arc<()>,
}

impl Snapshot {
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
        let mut projects: std::collections::BTreeMap<ProjectName, Vec<Arc<DistFile>>> =
            Default::default();
        let mut by_filename = imbl::HashMap::new();
        let mut shadowed = 0;
        for file in files {
            // The same filename in two directories is one file to pip: the first wins (see
            // `from_found` for the order), and only it is listed.
            if by_filename.contains_key(file.name.filename()) {
                shadowed += 1;
                continue;
            }
            by_filename.insert(file.name.filename().to_owned(), file.clone());
            projects
                .entry(file.name.project().clone())
                .or_default()
                .push(file);
        }
        Self {
            projects: projects
                .into_iter()
                .map(|(name, mut files)| {
                    files.sort_by(|a, b| version_order(a, b));
                    (name, Arc::new(files))
                })
                .collect(),
            by_filename,
            shadowed,
            names: Arc::new(()),
        }
    }

    /// This snapshot with `removed` gone and `added` listed, or `None` when the change
    /// touches a filename present more than once, where only a rebuild in path order can
    /// tell which copy is served. The cost grows with the change, not with the index.
    pub fn changed(&self, removed: &[Arc<DistFile>], added: &[Arc<DistFile>]) -> Option<Self> {
        if removed.is_empty() && added.is_empty() {
            return Some(self.clone());
        }
        if self.shadowed > 0 {
            return None;
        }
        let mut next = self.clone();
        let mut names_changed = false;
        for file in removed {
            let filename = file.name.filename();
            match next.by_filename.get(filename) {
                Some(listed) if Arc::ptr_eq(listed, file) => {}
                // Not what is listed under that name: another copy, which only a rebuild
                // can place.
                _ => return None,
            }
            next.by_filename.remove(filename);
            let project = file.name.project();
            let files = next.projects.get(project)?;
            let remaining: Vec<_> = files
                .iter()
                .filter(|listed| !Arc::ptr_eq(listed, file))
                .cloned()
                .collect();
            if remaining.is_empty() {
                next.projects.remove(project);
                names_changed = true;
            } else {
                next.projects.insert(project.clone(), Arc::new(remaining));
            }
        }
        for file in added {
            let filename = file.name.filename();
            if next.by_filename.contains_key(filename) {
                return None;
            }
            next.by_filename.insert(filename.to_owned(), file.clone());
            let project = file.name.project();
            let mut files = match next.projects.get(project) {
                Some(files) => files.as_ref().clone(),
                None => {
                    names_changed = true;
                    Vec::new()
                }
            };
            let at = files.partition_point(|listed| version_order(listed, file).is_lt());
            files.insert(at, file.clone());
            next.projects.insert(project.clone(), Arc::new(files));
        }
        if names_changed {
            next.names = Arc::new(());
        }
        Some(next)
    }

    pub fn files(&self) -> impl Iterator<Item = &Arc<DistFile>> {
        self.projects.values().flat_map(|files| files.iter())
    }

    /// How many files are listed.
    pub fn len(&self) -> usize {
        self.by_filename.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_filename.is_empty()
    }

    /// Every project with its files, by name.
    pub fn projects(&self) -> impl Iterator<Item = (&ProjectName, &[Arc<DistFile>])> {
        self.projects
            .iter()
            .map(|(name, files)| (name, files.as_slice()))
    }

    pub fn project_names(&self) -> impl Iterator<Item = &ProjectName> {
        self.projects.keys()
    }

    pub fn project(&self, project: &ProjectName) -> Option<&[Arc<DistFile>]> {
        self.projects.get(project).map(|files| files.as_slice())
    }

    pub fn find_filename(&self, filename: &str) -> Option<&Arc<DistFile>> {
        self.by_filename.get(filename)
    }

    /// Whether `other` lists the same project names (the root index of one serves both).
    pub fn same_names(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.names, &other.names)
    }
}

/// A project's files: by version, then by filename.
fn version_order(a: &DistFile, b: &DistFile) -> std::cmp::Ordering {
    a.name
        .parsed_version()
        .cmp(b.name.parsed_version())
        .then_with(|| a.name.filename().cmp(b.name.filename()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::FileIdentity;
    use proptest::prelude::*;
    use std::time::SystemTime;

    fn file(dir: &str, filename: &str) -> Arc<DistFile> {
        Arc::new(DistFile {
            name: crate::names::DistFilename::parse(filename).unwrap(),
            path: PathBuf::from("/root").join(dir).join(filename),
            relative_path: if dir.is_empty() {
                filename.to_owned()
            } else {
                format!("{dir}/{filename}")
            },
            identity: FileIdentity {
                size: 1,
                modified: SystemTime::UNIX_EPOCH,
                changed: SystemTime::UNIX_EPOCH,
                inode: 1,
                device: 1,
            },
        })
    }

    fn listing(snapshot: &Snapshot) -> Vec<(String, String)> {
        snapshot
            .files()
            .map(|f| (f.name.project().to_string(), f.relative_path.clone()))
            .collect()
    }

    proptest! {
        /// Whatever is added and removed, the change gives what a rebuild from the files
        /// gives, or declines (only where a filename is present twice).
        #[test]
        fn a_change_is_what_a_rebuild_gives(
            initial in proptest::collection::vec((0..3usize, 0..6u8, 0..3u8), 0..12),
            additions in proptest::collection::vec((0..3usize, 0..6u8, 0..3u8), 0..6),
            removals in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let dirs = ["", "a", "b"];
            let make = |(dir, project, version): (usize, u8, u8)| {
                file(dirs[dir], &format!("p{project}-{version}.0-py3-none-any.whl"))
            };
            let roots = [PathBuf::from("/root")];
            let mut files: Vec<Arc<DistFile>> = initial.into_iter().map(make).collect();
            // One file per path, as a directory holds.
            files.sort_by(|a, b| a.path.cmp(&b.path));
            files.dedup_by(|a, b| a.path == b.path);
            let before = Snapshot::from_found(&roots, files.clone());
            let mut removed = Vec::new();
            for index in removals {
                if files.is_empty() {
                    break;
                }
                removed.push(files.remove(index.index(files.len())));
            }
            let mut added = Vec::new();
            for addition in additions {
                let new = make(addition);
                if !files.iter().any(|f| f.path == new.path) {
                    files.push(new.clone());
                    added.push(new);
                }
            }
            let rebuilt = Snapshot::from_found(&roots, files);
            if let Some(changed) = before.changed(&removed, &added) {
                prop_assert_eq!(listing(&changed), listing(&rebuilt));
                prop_assert_eq!(changed.len(), rebuilt.len());
                let names: Vec<_> = changed.project_names().collect();
                let rebuilt_names: Vec<_> = rebuilt.project_names().collect();
                prop_assert_eq!(&names, &rebuilt_names);
                let before_names: Vec<_> = before.project_names().collect();
                // Same names claimed only when they are (a project emptied and refilled in
                // one change may be re-rendered for nothing, never served stale).
                prop_assert!(!changed.same_names(&before) || names == before_names);
                if removed.is_empty()
                    && added.iter().all(|a| before.project(a.name.project()).is_some())
                {
                    prop_assert!(changed.same_names(&before));
                }
            } else {
                prop_assert!(before.shadowed > 0 || rebuilt.shadowed > 0);
            }
        }
    }

    #[test]
    fn a_new_version_lands_in_version_order_and_keeps_the_names() {
        let before = Snapshot::from_shared([
            file("", "demo-1.0-py3-none-any.whl"),
            file("", "demo-10.0-py3-none-any.whl"),
        ]);
        let after = before
            .changed(&[], &[file("", "demo-2.0-py3-none-any.whl")])
            .unwrap();
        let versions: Vec<_> = after
            .project(&ProjectName::new("demo").unwrap())
            .unwrap()
            .iter()
            .map(|f| f.name.filename().to_owned())
            .collect();
        assert_eq!(
            versions,
            [
                "demo-1.0-py3-none-any.whl",
                "demo-2.0-py3-none-any.whl",
                "demo-10.0-py3-none-any.whl"
            ]
        );
        assert!(after.same_names(&before));
        let other = after
            .changed(&[], &[file("", "other-1.0-py3-none-any.whl")])
            .unwrap();
        assert!(!other.same_names(&after));
    }
}
