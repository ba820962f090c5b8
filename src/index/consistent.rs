//! The default backend, `consistent-dir`: as consistent as scanning on every request, at the
//! cost of one `open` + `fstat` + `close` per directory per check, a check being shared by
//! every request that waits for it.
//!
//! Every directory of the tree is remembered with the stamp it had when it was last read (its
//! mtime, ctime, inode and device). A check re-reads only the stamps; a directory whose stamp
//! moved is read again, only the entries that are new or whose inode changed are stat'ed, and
//! the snapshot changes by those entries alone.
//! Creating, renaming or deleting an entry always moves the stamp of its directory, whichever
//! process or host did it, so the listing of every replica follows the disk.
//!
//! Opening the directory rather than calling `stat` on its path matters on NFS (AWS EFS): the
//! open is what makes the client revalidate its cached attributes (close-to-open consistency).
//!
//! The racy case: timestamps have a granularity (a kernel tick on a local disk, a second on
//! some filesystems, whatever the server's clock says on NFS). An entry created in the same
//! tick as the last change, but after our read, leaves the stamp unchanged. So a directory's
//! listing is trusted only once it was read after the filesystem's clock had moved past the
//! directory's last change ([`super::fs_clock`]): from then on every change carries a later
//! timestamp. Until then the directory is read again whenever it is asked for. Where the
//! filesystem's clock cannot be read (a read-only directory), this host's clock stands in,
//! with [`SETTLE_WINDOW`] of margin for the granularity and the skew.
//!
//! Work is shared, not repeated: a check of the stamps (and the re-read it may lead to) is
//! one run at a time, and every request that arrived before a run began takes its result
//! ([`super::coalesce`]). That run looked at the directories after the request arrived, so
//! it saw everything the request's own check would have seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::coalesce::Coalesced;
use super::fs_clock::{self, timestamp, FsClocks, FsNow};
use super::{classify, is_gone, real_roots, Backend, DistFile, Entry, Snapshot, Unreadable};

/// Where the filesystem's clock cannot be read: how long after its last change (by this
/// host's clock) a directory's stamp is distrusted. It covers the coarsest timestamp
/// granularity we expect (one second) plus clock skew between this host and an NFS server.
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
        timestamp(secs, nanos).max(self.modified)
    }
}

/// Reads a directory's stamp, and the filesystem's clock. A trait so that tests can stand in
/// a filesystem with coarse timestamps.
pub trait StampSource: Send + Sync {
    fn stamp(&self, dir: &Path) -> std::io::Result<DirStamp>;
    /// The clock of the filesystem `root` is on, now, if it can be read.
    fn now(&self, root: &Path) -> Option<FsNow>;
}

/// The real one: `open` + `fstat`, see the module docs for why not `stat`. `O_DIRECTORY`
/// because a directory replaced by a FIFO would otherwise block the open (and with it every
/// listing) until a writer came: it fails with `ENOTDIR` instead, as if the directory were
/// gone, which it is.
#[derive(Default)]
pub struct OpenAndStat {
    clocks: FsClocks,
}

impl StampSource for OpenAndStat {
    fn stamp(&self, dir: &Path) -> std::io::Result<DirStamp> {
        use std::os::unix::fs::OpenOptionsExt;
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
            .open(dir)?;
        Ok(DirStamp::of(&handle.metadata()?))
    }

    fn now(&self, root: &Path) -> Option<FsNow> {
        self.clocks.now(root)
    }
}

/// Distribution files by name, with the inode readdir gave. Persistent, so that a listing
/// with one more file shares everything else with the last.
type Files = imbl::HashMap<String, (u64, Arc<DistFile>)>;

/// The same files as `(inode, hash of the name)`, which a re-read looks every entry up in:
/// two integers hash and compare far faster than names do, which matters at 100,000 entries
/// a read. The name hash is keyed per process, so no name can be made to collide on purpose.
type Inodes = std::collections::HashSet<(u64, u64)>;

/// One directory as it was last read.
#[derive(Debug, Clone)]
struct DirListing {
    stamp: DirStamp,
    /// When the read began: by the filesystem's clock if it could be read (on this
    /// directory's device), else by this host's.
    read_at: ReadAt,
    files: Files,
    /// Shared with the listings of earlier runs while the directory does not change.
    inodes: Arc<Inodes>,
    subdirs: Arc<Vec<PathBuf>>,
}

#[derive(Debug, Clone, Copy)]
enum ReadAt {
    Filesystem(SystemTime),
    Host(SystemTime),
}

impl DirListing {
    /// Whether every change after this read is bound to move the stamp.
    fn settled(&self, window: Duration) -> bool {
        let last_change = self.stamp.last_change();
        match self.read_at {
            // One clock on both sides: later is later, whatever the granularity or the skew.
            ReadAt::Filesystem(clock) => clock > last_change,
            ReadAt::Host(clock) => clock
                .duration_since(last_change)
                .is_ok_and(|age| age >= window),
        }
    }
}

/// Every directory under the roots, and the snapshot they make up.
#[derive(Default, Clone)]
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
    /// One check (and re-read) of the tree at a time, shared by the requests waiting for it.
    validation: Arc<Coalesced<Arc<Tree>>>,
    /// Directories read so far (not just stamped): what the work of a change costs.
    dir_reads: AtomicUsize,
    /// Whether the last check found a change: then the next one does not wait for the
    /// filesystem's clock (see `await_clock_past`).
    changing: std::sync::atomic::AtomicBool,
    /// Keys the hash of names in [`Inodes`].
    names: std::collections::hash_map::RandomState,
}

impl ConsistentBackend {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self::with_stamps(roots, Box::new(OpenAndStat::default()), SETTLE_WINDOW)
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
            validation: Arc::default(),
            dir_reads: AtomicUsize::new(0),
            changing: std::sync::atomic::AtomicBool::new(false),
            names: std::collections::hash_map::RandomState::new(),
        }
    }

    fn current(&self) -> Arc<Tree> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `None` when every directory's stamp is the one it had when read, and trusted, and
    /// every directory that could not be read still cannot; else the change found first,
    /// which the re-read that follows will wait out (see `await_clock_past`).
    fn stale_since(&self, tree: &Tree) -> Option<SystemTime> {
        if tree.dirs.is_empty() && tree.unreadable.is_empty() {
            return Some(SystemTime::UNIX_EPOCH);
        }
        for (path, listing) in &tree.dirs {
            match self.stamps.stamp(path) {
                Ok(stamp) if stamp == listing.stamp && listing.settled(self.window) => {}
                Ok(stamp) => return Some(stamp.last_change()),
                Err(_) => return Some(SystemTime::UNIX_EPOCH),
            }
        }
        let still_unreadable = tree
            .unreadable
            .iter()
            .all(|path| self.stamps.stamp(path).is_err_and(|err| !is_gone(&err)));
        (!still_unreadable).then_some(SystemTime::UNIX_EPOCH)
    }

    /// Waits, briefly, for the filesystem's clock to move past `change`. A directory read in
    /// the same tick as its last change cannot be trusted and would be read again at the next
    /// request; on a filesystem whose tick is a few milliseconds, waiting out the tick before
    /// reading costs less than reading twice (a quiet directory that just took one upload).
    /// On a coarse one the wait gives up.
    fn await_clock_past(&self, change: SystemTime) {
        for root in &self.roots {
            fs_clock::await_past(change, || self.stamps.now(root).map(|now| now.at));
        }
    }

    fn name_hash(&self, name: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.names.hash_one(name)
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
        let mut change = Change::default();
        let mut pending: Vec<(usize, PathBuf)> = self.roots.iter().cloned().enumerate().collect();
        // Read before any directory is, so that every read below begins after it.
        let clocks: Vec<Option<FsNow>> = self.roots.iter().map(|r| self.stamps.now(r)).collect();
        while let Some((root, dir)) = pending.pop() {
            let host_now = SystemTime::now();
            let stamp = match self.stamps.stamp(&dir) {
                Ok(stamp) => stamp,
                // Gone between its parent's read and now (or a missing root): nothing to list.
                // Unreadable: the rest of the tree is still served.
                Err(err) => {
                    self.left_out(dir, &err, &mut unreadable);
                    continue;
                }
            };
            // A mount point below a root has a clock of its own, which was not read.
            let read_at = match clocks[root] {
                Some(clock) if clock.device == stamp.device => ReadAt::Filesystem(clock.at),
                _ => ReadAt::Host(host_now),
            };
            let listing = match old.dirs.get(&dir) {
                Some(previous) if previous.stamp == stamp && previous.settled(self.window) => {
                    previous.clone()
                }
                previous => {
                    match self.read_dir(root, &dir, stamp, read_at, previous, &mut change) {
                        Ok(listing) => listing,
                        Err(err) => {
                            self.left_out(dir, &err, &mut unreadable);
                            continue;
                        }
                    }
                }
            };
            pending.extend(listing.subdirs.iter().map(|sub| (root, sub.clone())));
            dirs.insert(dir, listing);
        }
        // Directories gone (or now unreadable) take their files with them.
        for (path, listing) in &old.dirs {
            if !dirs.contains_key(path) {
                change
                    .removed
                    .extend(listing.files.values().map(|(_, file)| file.clone()));
            }
        }
        unreadable.sort();
        let snapshot = self.apply(&old.snapshot, &change, &dirs);
        Tree {
            dirs,
            unreadable,
            snapshot,
        }
    }

    /// `snapshot` with `change` made: by itself when it can be, else rebuilt from `dirs`.
    fn apply(
        &self,
        snapshot: &Arc<Snapshot>,
        change: &Change,
        dirs: &BTreeMap<PathBuf, DirListing>,
    ) -> Arc<Snapshot> {
        if change.removed.is_empty() && change.added.is_empty() {
            return snapshot.clone();
        }
        match snapshot.changed(&change.removed, &change.added) {
            Some(changed) => Arc::new(changed),
            None => Arc::new(Snapshot::from_found(
                &self.roots,
                dirs.values()
                    .flat_map(|listing| listing.files.values().map(|(_, file)| file.clone())),
            )),
        }
    }

    /// Reads `dir` again, starting from its `previous` listing: an entry readdir gives with
    /// the inode it had is kept as it was, without a `stat`; the rest is looked at and noted
    /// in `change`.
    fn read_dir(
        &self,
        root: usize,
        dir: &Path,
        stamp: DirStamp,
        read_at: ReadAt,
        previous: Option<&DirListing>,
        change: &mut Change,
    ) -> std::io::Result<DirListing> {
        use std::os::unix::fs::DirEntryExt;
        self.dir_reads.fetch_add(1, Ordering::Relaxed);
        use std::os::unix::ffi::OsStrExt;
        let no_inodes = Inodes::new();
        let known = previous.map_or(&no_inodes, |p| &*p.inodes);
        let mut files = previous.map(|p| p.files.clone()).unwrap_or_default();
        let mut inodes = Inodes::with_capacity(known.len() + 16);
        let mut subdirs = Vec::new();
        let mut found = Change::default();
        for entry in std::fs::read_dir(dir)? {
            // An error in the middle of a directory leaves it unread as a whole: a listing
            // that silently lacks files would be worse than one that lacks the directory.
            let entry = entry?;
            let os_name = entry.file_name();
            let key = (entry.ino(), self.name_hash(os_name.as_bytes()));
            // Only a regular file is taken on its name and inode (readdir's type costs no
            // call): an inode number is reused, by a directory or a symlink too.
            let regular = entry.file_type().is_ok_and(|kind| kind.is_file());
            if regular && known.contains(&key) {
                inodes.insert(key);
                continue;
            }
            let Ok(name) = os_name.into_string() else {
                continue;
            };
            let inode = key.0;
            // What this process published since the last read (see `list_published`).
            if regular && files.get(&name).is_some_and(|(listed, _)| *listed == inode) {
                inodes.insert(key);
                continue;
            }
            match classify(
                &self.roots[root],
                &self.real_roots,
                &entry,
                &self.unreadable,
            ) {
                Entry::Dir(path) => {
                    subdirs.push(path);
                    // A listed file replaced by a directory of its name.
                    if let Some((_, gone)) = files.remove(&name) {
                        found.removed.push(gone);
                    }
                }
                Entry::File(file) => {
                    let file: Arc<DistFile> = Arc::from(file);
                    if let Some((_, replaced)) = files.insert(name.clone(), (inode, file.clone())) {
                        found.removed.push(replaced);
                    }
                    found.added.push(file);
                    inodes.insert(key);
                }
                // A listed file replaced by something that is not one.
                Entry::Skipped => {
                    if let Some((_, gone)) = files.remove(&name) {
                        found.removed.push(gone);
                    }
                }
            }
        }
        // Listed files readdir no longer gave: gone. Only then is it worth finding which.
        if files.len() > inodes.len() {
            let gone: Vec<String> = files
                .iter()
                .filter(|(name, (inode, _))| {
                    !inodes.contains(&(*inode, self.name_hash(name.as_bytes())))
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in gone {
                if let Some((_, file)) = files.remove(&name) {
                    found.removed.push(file);
                }
            }
        }
        change.removed.append(&mut found.removed);
        change.added.append(&mut found.added);
        let subdirs = match previous {
            Some(previous) if *previous.subdirs == subdirs => previous.subdirs.clone(),
            _ => Arc::new(subdirs),
        };
        Ok(DirListing {
            stamp,
            read_at,
            files,
            inodes: Arc::new(inodes),
            subdirs,
        })
    }

    /// Lists a file this process has just published, without waiting for a re-read. Its
    /// directory's stamp is left as it was read: the publication moved it, and so may have a
    /// change by another host in the same moment, which only a read can show. The re-read
    /// that follows finds this file already listed, with the same inode, and so costs no
    /// `stat` of it and no new snapshot.
    fn list_published(&self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return;
        };
        let Some(root) = self.roots.iter().position(|root| dir.starts_with(root)) else {
            return;
        };
        let Ok(parsed) = super::DistFilename::parse(name) else {
            return;
        };
        // Under the lock, so that no re-read lands between this look at the disk and the
        // listing: a file removed meanwhile is not listed again.
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let Ok(metadata) = std::fs::symlink_metadata(path) else {
            return;
        };
        if !metadata.is_file() {
            return;
        }
        let Some(listing) = current.dirs.get(dir) else {
            return;
        };
        if listing
            .files
            .get(name)
            .is_some_and(|(inode, _)| *inode == metadata.ino())
        {
            return;
        }
        let file = Arc::new(DistFile {
            name: parsed,
            relative_path: super::relative_path(&self.roots[root], path),
            path: path.to_owned(),
            identity: super::FileIdentity::of(&metadata),
        });
        let mut tree = Tree::clone(&current);
        let mut change = Change::default();
        if let Some(listing) = tree.dirs.get_mut(dir) {
            if let Some((_, replaced)) = listing
                .files
                .insert(name.to_owned(), (metadata.ino(), file.clone()))
            {
                change.removed.push(replaced);
            }
            // Whatever the stamp says, the next check reads the directory again.
            listing.read_at = ReadAt::Host(SystemTime::UNIX_EPOCH);
        }
        change.added.push(file);
        tree.snapshot = self.apply(&tree.snapshot, &change, &tree.dirs);
        *current = Arc::new(tree);
    }
}

/// Files that left or joined the listings in one re-read.
#[derive(Default)]
struct Change {
    removed: Vec<Arc<DistFile>>,
    added: Vec<Arc<DistFile>>,
}

impl ConsistentBackend {
    /// The tree as the disk holds it now: the current one if no directory moved since it was
    /// read and trusted, else read again. Run through `validation`, one at a time.
    fn validated(&self) -> Arc<Tree> {
        let tree = self.current();
        let Some(change) = self.stale_since(&tree) else {
            self.changing.store(false, Ordering::Relaxed);
            return tree;
        };
        // A directory changing at every check (uploads arriving back to back) will be
        // read again anyway: waiting out the tick would only slow each of them down.
        if !self.changing.swap(true, Ordering::Relaxed) {
            self.await_clock_past(change);
        }
        // A file published meanwhile is in `current` and not in `tree`: the re-read
        // starts from `current` so that it is found already known.
        let latest = self.current();
        let fresh = Arc::new(self.reread(&latest));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        fresh
    }
}

impl Backend for ConsistentBackend {
    fn snapshot(&self) -> std::io::Result<Arc<Snapshot>> {
        self.snapshot_from(None)
    }

    fn join_check(&self) -> super::JoinedCheck {
        let check = self.validation.clone().join_async();
        Box::pin(async move { check.await.map(|tree| tree.snapshot.clone()).map_err(Some) })
    }

    fn snapshot_from(&self, ticket: Option<super::Ticket>) -> std::io::Result<Arc<Snapshot>> {
        let tree = match ticket {
            Some(ticket) => self.validation.run_with(ticket, || self.validated()),
            None => self.validation.run(|| self.validated()),
        };
        Ok(tree.snapshot.clone())
    }

    fn published(&self, path: &Path) {
        self.list_published(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

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
            let real = OpenAndStat::default().stamp(dir)?;
            let mut frozen = self.frozen.lock().unwrap();
            Ok(*frozen.entry(dir.to_owned()).or_insert(real))
        }
        /// No clock to read: the host's clock and the window decide.
        fn now(&self, _root: &Path) -> Option<FsNow> {
            None
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
            OpenAndStat::default().stamp(dir)
        }
        fn now(&self, _root: &Path) -> Option<FsNow> {
            None
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

    /// A filesystem with one-second timestamps: every stamp and every clock reading is the
    /// real one cut to its whole second, as ext4 with small inodes (or a server that rounds)
    /// gives them.
    #[derive(Default)]
    struct Coarse(OpenAndStat);

    fn whole_second(at: SystemTime) -> SystemTime {
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    impl StampSource for Arc<Coarse> {
        fn stamp(&self, dir: &Path) -> std::io::Result<DirStamp> {
            let real = self.0.stamp(dir)?;
            let changed = whole_second(real.last_change());
            let secs = changed
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            Ok(DirStamp {
                modified: whole_second(real.modified),
                changed: (i64::try_from(secs).unwrap(), 0),
                ..real
            })
        }
        fn now(&self, root: &Path) -> Option<FsNow> {
            self.0.now(root).map(|now| FsNow {
                at: whole_second(now.at),
                ..now
            })
        }
    }

    #[test]
    fn on_a_coarse_filesystem_the_clock_settles_nothing_inside_the_tick() {
        let dir = tempfile::tempdir().unwrap();
        let coarse = Arc::new(Coarse::default());
        // The window would trust nothing for an hour: only the filesystem's clock settles.
        let backend = ConsistentBackend::with_stamps(
            vec![dir.path().to_owned()],
            Box::new(coarse.clone()),
            Duration::from_secs(3600),
        );
        backend.snapshot().unwrap();
        // For three seconds, a new file after every read, each landing in the same second as
        // the read before it most of the time: each must be seen by the next request.
        let until = std::time::Instant::now() + Duration::from_secs(3);
        let mut written = 0;
        let mut settled_reads = 0;
        while std::time::Instant::now() < until {
            std::fs::write(
                dir.path()
                    .join(format!("demo-1.{written}-py3-none-any.whl")),
                b"x",
            )
            .unwrap();
            written += 1;
            assert_eq!(backend.snapshot().unwrap().files().count(), written);
            settled_reads += usize::from(
                backend
                    .current()
                    .dirs
                    .values()
                    .all(|listing| listing.settled(backend.window)),
            );
            std::thread::sleep(Duration::from_millis(7));
        }
        assert!(written > 100, "{written}");
        // A read settles only after the second of the last change is over, which with a
        // write every 7 ms happens only for reads just after a tick: a few, not most.
        assert!(settled_reads < written / 4, "{settled_reads} of {written}");
        // Once the second is over, the next read settles and costs no more reads after it.
        std::thread::sleep(Duration::from_millis(1100));
        backend.snapshot().unwrap();
        let reads = backend.dir_reads.load(Ordering::Relaxed);
        for _ in 0..10 {
            assert_eq!(backend.snapshot().unwrap().files().count(), written);
        }
        assert_eq!(backend.dir_reads.load(Ordering::Relaxed), reads);
    }

    #[test]
    fn with_a_fine_clock_a_change_is_trusted_within_milliseconds() {
        let dir = tempfile::tempdir().unwrap();
        let backend = ConsistentBackend::new(vec![dir.path().to_owned()]);
        for n in 0..5 {
            std::fs::write(
                dir.path().join(format!("demo-1.{n}-py3-none-any.whl")),
                b"x",
            )
            .unwrap();
            assert_eq!(backend.snapshot().unwrap().files().count(), n + 1);
            // Far less than the host-clock window of two seconds.
            std::thread::sleep(Duration::from_millis(50));
            backend.snapshot().unwrap();
            let reads = backend.dir_reads.load(Ordering::Relaxed);
            for _ in 0..20 {
                backend.snapshot().unwrap();
            }
            assert_eq!(
                backend.dir_reads.load(Ordering::Relaxed),
                reads,
                "settled 50 ms after a change"
            );
        }
    }

    /// Real stamps and clock, but reading the clock takes a while, so that every request
    /// released at once arrives while the first re-read is under way.
    struct SlowClock(OpenAndStat);

    impl StampSource for Arc<SlowClock> {
        fn stamp(&self, dir: &Path) -> std::io::Result<DirStamp> {
            self.0.stamp(dir)
        }
        fn now(&self, root: &Path) -> Option<FsNow> {
            std::thread::sleep(Duration::from_millis(200));
            self.0.now(root)
        }
    }

    /// A backend over `dir` (holding WHEEL and a subdirectory) whose clock is slow to read,
    /// listed and settled, then WHEEL2 added: the directory reads so far, and the backend.
    fn backend_after_a_change(dir: &Path) -> (Arc<ConsistentBackend>, usize) {
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join(WHEEL), b"one").unwrap();
        let backend = Arc::new(ConsistentBackend::with_stamps(
            vec![dir.to_owned()],
            Box::new(Arc::new(SlowClock(OpenAndStat::default()))),
            SETTLE_WINDOW,
        ));
        backend.snapshot().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        backend.snapshot().unwrap();
        std::fs::write(dir.join(WHEEL2), b"two").unwrap();
        // Past the filesystem's tick, so that the one re-read settles the directory.
        std::thread::sleep(Duration::from_millis(50));
        let reads = backend.dir_reads.load(Ordering::Relaxed);
        (backend, reads)
    }

    #[test]
    fn many_requests_during_a_change_cause_one_reread() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, reads) = backend_after_a_change(dir.path());
        let requests = 64;
        let start = Arc::new(std::sync::Barrier::new(requests));
        let threads: Vec<_> = (0..requests)
            .map(|_| {
                let (backend, start) = (backend.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    names(&backend.snapshot().unwrap())
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), [WHEEL, WHEEL2]);
        }
        // The changed root, once; "sub" did not change and is not read again.
        assert_eq!(backend.dir_reads.load(Ordering::Relaxed) - reads, 1);
    }

    #[test]
    fn many_requests_waiting_as_tasks_during_a_change_cause_one_reread() {
        let dir = tempfile::tempdir().unwrap();
        let (backend, reads) = backend_after_a_change(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let requests = 64;
        let listed = runtime.block_on(async {
            let start = Arc::new(tokio::sync::Barrier::new(requests));
            let tasks: Vec<_> = (0..requests)
                .map(|_| {
                    let (backend, start) = (backend.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        let joined = backend.join_check().await;
                        let backend = backend.clone();
                        let snapshot = match joined {
                            Ok(snapshot) => snapshot,
                            Err(ticket) => {
                                tokio::task::spawn_blocking(move || backend.snapshot_from(ticket))
                                    .await
                                    .unwrap()
                                    .unwrap()
                            }
                        };
                        names(&snapshot)
                    })
                })
                .collect();
            let mut listed = Vec::new();
            for task in tasks {
                listed.push(task.await.unwrap());
            }
            listed
        });
        assert!(
            listed.iter().all(|names| names == &[WHEEL, WHEEL2]),
            "{listed:?}"
        );
        assert_eq!(backend.dir_reads.load(Ordering::Relaxed) - reads, 1);
    }

    #[test]
    fn a_file_published_here_is_listed_at_once_and_the_reread_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WHEEL), b"one").unwrap();
        let backend = ConsistentBackend::new(vec![dir.path().to_owned()]);
        backend.snapshot().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        backend.snapshot().unwrap();
        let temp = dir.path().join(".upload");
        std::fs::write(&temp, b"two").unwrap();
        std::fs::hard_link(&temp, dir.path().join(WHEEL2)).unwrap();
        std::fs::remove_file(&temp).unwrap();
        backend.published(&dir.path().join(WHEEL2));
        let listed = backend.current().snapshot.clone();
        assert_eq!(names(&listed), [WHEEL, WHEEL2]);
        // The stamp moved, so the next request reads the directory again: it finds the file
        // already listed and keeps the snapshot as it is.
        let reads = backend.dir_reads.load(Ordering::Relaxed);
        let after = backend.snapshot().unwrap();
        assert_eq!(backend.dir_reads.load(Ordering::Relaxed), reads + 1);
        assert!(Arc::ptr_eq(&listed, &after));
    }

    const INNER: &str = "inner-1.0-py3-none-any.whl";

    #[test]
    fn a_file_replaced_by_a_directory_of_its_name_is_listed_as_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let backend = ConsistentBackend::new(vec![dir.path().to_owned()]);
        // Several rounds: the filesystem may hand the file's inode to the directory, which
        // must not pass for the file.
        for round in 0..5 {
            let name = format!("demo-{round}.0-py3-none-any.whl");
            std::fs::write(dir.path().join(&name), b"one").unwrap();
            assert!(names(&backend.snapshot().unwrap()).contains(&name));
            std::fs::remove_file(dir.path().join(&name)).unwrap();
            std::fs::create_dir(dir.path().join(&name)).unwrap();
            std::fs::write(dir.path().join(&name).join(INNER), b"inner").unwrap();
            let listed: Vec<String> = backend
                .snapshot()
                .unwrap()
                .files()
                .map(|f| f.relative_path.clone())
                .collect();
            assert_eq!(listed, [format!("{name}/{INNER}")], "round {round}");
            std::fs::remove_dir_all(dir.path().join(&name)).unwrap();
        }
    }
}
