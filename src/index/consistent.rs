//! The default backend, `consistent-dir`: as consistent as scanning on every request, at the
//! cost of one `open` + `fstat` + `close` per directory per request.
//!
//! Every directory of the tree is remembered with the stamp it had when it was last read (its
//! mtime, ctime, inode and device). A request re-reads only the stamps; a directory whose stamp
//! moved is read again, and only the entries that are new or whose inode changed are stat'ed.
//! Creating, renaming or deleting an entry always moves the stamp of its directory, whichever
//! process or host did it, so the listing of every replica follows the disk.
//!
//! Opening the directory rather than calling `stat` on its path matters on NFS (AWS EFS): the
//! open is what makes the client revalidate its cached attributes (close-to-open consistency).
//!
//! The racy case: timestamps have a granularity (a kernel tick on a local disk, a second on
//! some filesystems, whatever the server's clock says on NFS). An entry created in the same
//! tick as the last change, but after our read, leaves the stamp unchanged. So a directory read
//! less than [`SETTLE_WINDOW`] after its last change is unsettled and is read again on every
//! request until a read starts after the window; only then is its stamp trusted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use super::{classify, is_gone, real_roots, Backend, DistFile, Entry, Snapshot, Unreadable};

/// How long after its last change a directory's stamp is distrusted. It covers the coarsest
/// timestamp granularity we expect (one second) plus clock skew between this host and an NFS
/// server.
pub const SETTLE_WINDOW: Duration = Duration::from_secs(2);

/// What moves when a directory's entries change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirStamp {
    modified: SystemTime,
    changed: (i64, i64),
    inode: u64,
    device: u64,
}

impl DirStamp {
    fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }

    /// The later of mtime and ctime: when the directory last changed.
    fn last_change(&self) -> SystemTime {
        let (secs, nanos) = self.changed;
        let changed = u64::try_from(secs)
            .ok()
            .map(|secs| {
                SystemTime::UNIX_EPOCH + Duration::new(secs, u32::try_from(nanos).unwrap_or(0))
            })
            .unwrap_or(SystemTime::UNIX_EPOCH);
        changed.max(self.modified)
    }
}

/// Reads a directory's stamp. A trait so that tests can stand in a filesystem with coarse
/// timestamps.
pub trait StampSource: Send + Sync {
    fn stamp(&self, dir: &Path) -> std::io::Result<DirStamp>;
}

/// The real one: `open` + `fstat`, see the module docs for why not `stat`. `O_DIRECTORY`
/// because a directory replaced by a FIFO would otherwise block the open (and with it every
/// listing) until a writer came: it fails with `ENOTDIR` instead, as if the directory were
/// gone, which it is.
pub struct OpenAndStat;

impl StampSource for OpenAndStat {
    fn stamp(&self, dir: &Path) -> std::io::Result<DirStamp> {
        use std::os::unix::fs::OpenOptionsExt;
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
            .open(dir)?;
        Ok(DirStamp::of(&handle.metadata()?))
    }
}

/// One directory as it was last read.
#[derive(Debug)]
struct DirListing {
    stamp: DirStamp,
    read_at: SystemTime,
    /// Distribution files by name, with the inode readdir gave, to know which need a new stat.
    files: BTreeMap<String, (u64, Arc<DistFile>)>,
    subdirs: Vec<PathBuf>,
}

impl DirListing {
    fn settled(&self, window: Duration) -> bool {
        self.read_at
            .duration_since(self.stamp.last_change())
            .is_ok_and(|age| age >= window)
    }
}

/// Every directory under the roots, and the snapshot they make up.
#[derive(Default)]
struct Tree {
    dirs: BTreeMap<PathBuf, DirListing>,
    /// Directories that could not be read, left out of the snapshot. Each is tried again on
    /// every request (one `open`, as for any directory), so it is listed once it can be.
    unreadable: Vec<PathBuf>,
    snapshot: Arc<Snapshot>,
}

pub struct ConsistentBackend {
    roots: Vec<PathBuf>,
    real_roots: Vec<PathBuf>,
    unreadable: Unreadable,
    stamps: Box<dyn StampSource>,
    window: Duration,
    current: RwLock<Arc<Tree>>,
    /// Held while the tree is re-read, so that many requests finding the same change do the
    /// work once.
    refresh: Mutex<()>,
}

impl ConsistentBackend {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self::with_stamps(roots, Box::new(OpenAndStat), SETTLE_WINDOW)
    }

    pub fn with_stamps(
        roots: Vec<PathBuf>,
        stamps: Box<dyn StampSource>,
        window: Duration,
    ) -> Self {
        Self {
            real_roots: real_roots(&roots),
            roots,
            unreadable: Unreadable::default(),
            stamps,
            window,
            current: RwLock::new(Arc::new(Tree::default())),
            refresh: Mutex::new(()),
        }
    }

    fn current(&self) -> Arc<Tree> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True when every directory's stamp is the one it had when read, and trusted, and every
    /// directory that could not be read still cannot.
    fn still_valid(&self, tree: &Tree) -> bool {
        if tree.dirs.is_empty() && tree.unreadable.is_empty() {
            return false;
        }
        tree.dirs.iter().all(|(path, listing)| {
            listing.settled(self.window)
                && self
                    .stamps
                    .stamp(path)
                    .is_ok_and(|stamp| stamp == listing.stamp)
        }) && tree
            .unreadable
            .iter()
            .all(|path| self.stamps.stamp(path).is_err_and(|err| !is_gone(&err)))
    }

    /// Notes a directory that cannot be read; a missing one is simply not there.
    fn left_out(&self, dir: PathBuf, err: &std::io::Error, unreadable: &mut Vec<PathBuf>) {
        if !is_gone(err) {
            self.unreadable.skip(&dir, err);
            unreadable.push(dir);
        }
    }

    /// Walks from the roots, reusing every directory whose stamp has not moved.
    fn reread(&self, old: &Tree) -> Tree {
        let mut dirs = BTreeMap::new();
        let mut unreadable = Vec::new();
        let mut pending: Vec<(usize, PathBuf)> = self.roots.iter().cloned().enumerate().collect();
        while let Some((root, dir)) = pending.pop() {
            let read_at = SystemTime::now();
            let stamp = match self.stamps.stamp(&dir) {
                Ok(stamp) => stamp,
                // Gone between its parent's read and now (or a missing root): nothing to list.
                // Unreadable: the rest of the tree is still served.
                Err(err) => {
                    self.left_out(dir, &err, &mut unreadable);
                    continue;
                }
            };
            let listing = match old.dirs.get(&dir) {
                Some(previous) if previous.stamp == stamp && previous.settled(self.window) => {
                    DirListing {
                        stamp,
                        read_at: previous.read_at,
                        files: previous.files.clone(),
                        subdirs: previous.subdirs.clone(),
                    }
                }
                previous => match self.read_dir(root, &dir, stamp, read_at, previous) {
                    Ok(listing) => listing,
                    Err(err) => {
                        self.left_out(dir, &err, &mut unreadable);
                        continue;
                    }
                },
            };
            pending.extend(listing.subdirs.iter().map(|sub| (root, sub.clone())));
            dirs.insert(dir, listing);
        }
        unreadable.sort();
        let unchanged = dirs.len() == old.dirs.len()
            && dirs.iter().zip(old.dirs.iter()).all(|((a, la), (b, lb))| {
                a == b
                    && la.files.len() == lb.files.len()
                    && la
                        .files
                        .values()
                        .zip(lb.files.values())
                        .all(|((_, fa), (_, fb))| Arc::ptr_eq(fa, fb))
            });
        let snapshot = if unchanged {
            old.snapshot.clone()
        } else {
            Arc::new(Snapshot::from_found(
                &self.roots,
                dirs.values()
                    .flat_map(|listing| listing.files.values().map(|(_, file)| file.clone())),
            ))
        };
        Tree {
            dirs,
            unreadable,
            snapshot,
        }
    }

    fn read_dir(
        &self,
        root: usize,
        dir: &Path,
        stamp: DirStamp,
        read_at: SystemTime,
        previous: Option<&DirListing>,
    ) -> std::io::Result<DirListing> {
        use std::os::unix::fs::DirEntryExt;
        let mut files = BTreeMap::new();
        let mut subdirs = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            // An error in the middle of a directory leaves it unread as a whole: a listing
            // that silently lacks files would be worse than one that lacks the directory.
            let entry = entry?;
            let inode = entry.ino();
            if let Some((known_inode, file)) = entry
                .file_name()
                .to_str()
                .and_then(|name| previous?.files.get(name))
            {
                if *known_inode == inode {
                    files.insert(file.name.filename().to_owned(), (inode, file.clone()));
                    continue;
                }
            }
            match classify(
                &self.roots[root],
                &self.real_roots,
                &entry,
                &self.unreadable,
            ) {
                Entry::Dir(path) => subdirs.push(path),
                Entry::File(file) => {
                    files.insert(file.name.filename().to_owned(), (inode, Arc::from(file)));
                }
                Entry::Skipped => {}
            }
        }
        Ok(DirListing {
            stamp,
            read_at,
            files,
            subdirs,
        })
    }
}

impl Backend for ConsistentBackend {
    fn snapshot(&self) -> std::io::Result<Arc<Snapshot>> {
        let tree = self.current();
        if self.still_valid(&tree) {
            return Ok(tree.snapshot.clone());
        }
        let _refreshing = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
        // Another request may have re-read the tree while this one waited.
        let latest = self.current();
        if !Arc::ptr_eq(&latest, &tree) && self.still_valid(&latest) {
            return Ok(latest.snapshot.clone());
        }
        let fresh = Arc::new(self.reread(&latest));
        let snapshot = fresh.snapshot.clone();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// How many files each directory holds.
    fn file_counts(backend: &ConsistentBackend) -> HashMap<PathBuf, usize> {
        backend
            .current()
            .dirs
            .iter()
            .map(|(path, listing)| (path.clone(), listing.files.len()))
            .collect()
    }

    const WHEEL: &str = "demo-1.0-py3-none-any.whl";
    const WHEEL2: &str = "demo-2.0-py3-none-any.whl";

    /// A filesystem whose clock is stopped: every stamp reads the same until `tick()`, the way
    /// a change inside one timestamp tick looks on a real disk.
    struct FrozenStamps {
        frozen: Mutex<HashMap<PathBuf, DirStamp>>,
        reads: std::sync::atomic::AtomicUsize,
    }

    impl FrozenStamps {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                frozen: Mutex::new(HashMap::new()),
                reads: Default::default(),
            })
        }
        fn tick(&self) {
            self.frozen.lock().unwrap().clear();
        }
    }

    impl StampSource for Arc<FrozenStamps> {
        fn stamp(&self, dir: &Path) -> std::io::Result<DirStamp> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let real = OpenAndStat.stamp(dir)?;
            let mut frozen = self.frozen.lock().unwrap();
            Ok(*frozen.entry(dir.to_owned()).or_insert(real))
        }
    }

    fn names(snapshot: &Snapshot) -> Vec<String> {
        snapshot
            .files()
            .map(|f| f.name.filename().to_owned())
            .collect()
    }

    fn backend(dir: &Path, stamps: &Arc<FrozenStamps>, window: Duration) -> ConsistentBackend {
        ConsistentBackend::with_stamps(vec![dir.to_owned()], Box::new(stamps.clone()), window)
    }

    #[test]
    fn a_change_inside_the_same_timestamp_tick_is_still_seen() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WHEEL), b"one").unwrap();
        let stamps = FrozenStamps::new();
        let backend = backend(dir.path(), &stamps, Duration::from_secs(3600));
        assert_eq!(names(&backend.snapshot().unwrap()), [WHEEL]);
        // The stamp does not move: only distrust of a recent stamp can see this.
        std::fs::write(dir.path().join(WHEEL2), b"two").unwrap();
        assert_eq!(names(&backend.snapshot().unwrap()), [WHEEL, WHEEL2]);
        std::fs::remove_file(dir.path().join(WHEEL)).unwrap();
        assert_eq!(names(&backend.snapshot().unwrap()), [WHEEL2]);
    }

    #[test]
    fn a_settled_directory_costs_one_stamp_and_no_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WHEEL), b"one").unwrap();
        let stamps = FrozenStamps::new();
        let backend = backend(dir.path(), &stamps, Duration::ZERO);
        let first = backend.snapshot().unwrap();
        let reads = stamps.reads.load(Ordering::Relaxed);
        let again = backend.snapshot().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "an unchanged tree is not rebuilt"
        );
        assert_eq!(stamps.reads.load(Ordering::Relaxed) - reads, 1);
        // With the window at zero and the clock stopped, a change is invisible: this is
        // exactly the staleness the settle window exists to prevent.
        std::fs::write(dir.path().join(WHEEL2), b"two").unwrap();
        assert_eq!(names(&backend.snapshot().unwrap()), [WHEEL]);
        stamps.tick();
        assert_eq!(names(&backend.snapshot().unwrap()), [WHEEL, WHEEL2]);
    }

    #[test]
    fn only_changed_entries_are_looked_at_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join(WHEEL), b"one").unwrap();
        std::fs::write(dir.path().join("sub").join(WHEEL2), b"two").unwrap();
        let backend = ConsistentBackend::new(vec![dir.path().to_owned()]);
        let before = backend.snapshot().unwrap();
        let kept = before.find_filename(WHEEL).unwrap().clone();
        // Replaced under the same name (a new inode), as `mv` or an overwriting upload does.
        let replacement = dir.path().join(".tmp");
        std::fs::write(&replacement, b"three!").unwrap();
        std::fs::rename(&replacement, dir.path().join("sub").join(WHEEL2)).unwrap();
        let after = backend.snapshot().unwrap();
        assert!(Arc::ptr_eq(&kept, after.find_filename(WHEEL).unwrap()));
        let replaced = after.find_filename(WHEEL2).unwrap();
        assert_eq!(replaced.identity.size, 6);
        assert_eq!(replaced.relative_path, format!("sub/{WHEEL2}"));
        let counts = file_counts(&backend);
        assert_eq!(counts[dir.path()], 1);
        assert_eq!(counts[&dir.path().join("sub")], 1);
    }

    #[test]
    fn hidden_files_and_removed_directories_are_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".wheelhouse-upload-x.part"), b"partial").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join(WHEEL), b"one").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not a dist").unwrap();
        let backend = ConsistentBackend::new(vec![dir.path().to_owned()]);
        assert_eq!(names(&backend.snapshot().unwrap()), [WHEEL]);
        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        assert!(names(&backend.snapshot().unwrap()).is_empty());
    }

    /// Stamps as the disk gives them, except for directories marked unreadable, the way a
    /// root-owned 0700 `lost+found` looks to a server that does not run as root.
    #[derive(Default)]
    struct Denied(Mutex<std::collections::HashSet<PathBuf>>);

    impl StampSource for Arc<Denied> {
        fn stamp(&self, dir: &Path) -> std::io::Result<DirStamp> {
            if self.0.lock().unwrap().contains(dir) {
                return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
            }
            OpenAndStat.stamp(dir)
        }
    }

    #[test]
    fn an_unreadable_directory_is_left_out_until_it_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WHEEL), b"one").unwrap();
        let lost = dir.path().join("lost+found");
        std::fs::create_dir(&lost).unwrap();
        std::fs::write(lost.join(WHEEL2), b"two").unwrap();
        let denied = Arc::new(Denied::default());
        denied.0.lock().unwrap().insert(lost.clone());
        let backend = ConsistentBackend::with_stamps(
            vec![dir.path().to_owned()],
            Box::new(denied.clone()),
            Duration::ZERO,
        );
        assert_eq!(names(&backend.snapshot().unwrap()), [WHEEL]);
        let first = backend.snapshot().unwrap();
        assert!(
            Arc::ptr_eq(&first, &backend.snapshot().unwrap()),
            "a directory that stays unreadable costs no re-read"
        );
        denied.0.lock().unwrap().clear();
        assert_eq!(names(&backend.snapshot().unwrap()), [WHEEL, WHEEL2]);
    }

    #[test]
    fn a_directory_replaced_by_a_fifo_does_not_block_the_listing() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join(WHEEL), b"one").unwrap();
        std::fs::write(dir.path().join(WHEEL2), b"two").unwrap();
        let backend = Arc::new(ConsistentBackend::new(vec![dir.path().to_owned()]));
        assert_eq!(backend.snapshot().unwrap().files().count(), 2);
        std::fs::remove_dir_all(&sub).unwrap();
        let c_path = std::ffi::CString::new(sub.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let (done, finished) = std::sync::mpsc::channel();
        let listing = backend.clone();
        std::thread::spawn(move || {
            let _ = done.send(names(&listing.snapshot().unwrap()));
        });
        let listed = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the listing blocked on the FIFO");
        assert_eq!(listed, [WHEEL2]);
    }

    #[test]
    fn a_symlink_loop_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WHEEL), b"one").unwrap();
        std::os::unix::fs::symlink(WHEEL2, dir.path().join(WHEEL2)).unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("again")).unwrap();
        let backend = ConsistentBackend::new(vec![dir.path().to_owned()]);
        assert_eq!(names(&backend.snapshot().unwrap()), [WHEEL]);
        assert!(
            !backend.unreadable.skip(&dir.path().join(WHEEL2), &"x"),
            "the loop was already logged"
        );
    }

    #[test]
    fn requests_racing_a_change_reread_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WHEEL), b"one").unwrap();
        let backend = Arc::new(ConsistentBackend::new(vec![dir.path().to_owned()]));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let backend = backend.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let snapshot = backend.snapshot().unwrap();
                        assert!(snapshot.find_filename(WHEEL).is_some());
                    }
                })
            })
            .collect();
        for n in 0..50 {
            std::fs::write(
                dir.path().join(format!("demo-3.{n}-py3-none-any.whl")),
                b"x",
            )
            .unwrap();
            let snapshot = backend.snapshot().unwrap();
            assert_eq!(snapshot.files().count(), n + 2);
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().unwrap();
        }
    }
}
