//! The filesystem's own clock, read by touching a probe file in a package directory.
//!
//! A directory's timestamps come from the clock of whatever stamps its changes: this kernel's
//! coarse clock rounded to the filesystem's granularity on a local disk, the server's clock
//! on NFS. Comparing them with this host's clock needs a margin for both the granularity and
//! the skew, which nothing here can measure. Touching a file (`futimens` with no times, which
//! an NFS client sends as "set to the server's time") and reading back its ctime gives the
//! time of that very clock, rounded the same way: if it is later than a directory's last
//! change, every change from now on carries a later timestamp and so moves the directory's
//! stamp. A read of the directory that begins after such a reading misses nothing its stamp
//! would not reveal, whatever the granularity and whatever the skew.
//!
//! The probe is a hidden file, which no listing shows. Where it cannot be written (a read-only
//! mount or directory), the caller falls back to its own clock and a fixed window.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The probe's name in each root. Hidden, so listings skip it; not a temp file, so the sweeper
/// leaves it.
pub const CLOCK_FILE: &str = ".wheelhouse-clock";

/// How long a root whose probe could not be written is left alone before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// A reading of a filesystem's clock, and the device it holds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsNow {
    pub at: SystemTime,
    pub device: u64,
}

/// One probe per root, opened once and kept.
#[derive(Default)]
pub struct FsClocks {
    probes: Mutex<HashMap<PathBuf, Probe>>,
}

enum Probe {
    Open(std::fs::File),
    Failed(Instant),
}

impl FsClocks {
    /// The clock of the filesystem `root` is on, now; `None` when the probe cannot be
    /// written there.
    pub fn now(&self, root: &Path) -> Option<FsNow> {
        let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        let probe = probes
            .entry(root.to_owned())
            .or_insert_with(|| open_probe(root));
        if let Probe::Failed(since) = probe {
            if since.elapsed() < RETRY_AFTER {
                return None;
            }
            *probe = open_probe(root);
        }
        let Probe::Open(file) = probe else {
            return None;
        };
        match touch(file) {
            Ok(now) => Some(now),
            Err(err) => {
                tracing::warn!(
                    root = %root.display(),
                    "cannot touch {CLOCK_FILE}: {err}; changes are trusted {} s after they land",
                    super::consistent::SETTLE_WINDOW.as_secs()
                );
                *probe = Probe::Failed(Instant::now());
                None
            }
        }
    }
}

fn open_probe(root: &Path) -> Probe {
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join(CLOCK_FILE);
    // Never through a symlink (anyone who can write the directory could point it anywhere
    // the server may write), never blocking on a FIFO, and only a regular file.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .and_then(|file| {
            if file.metadata()?.is_file() {
                Ok(file)
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        });
    match opened {
        Ok(file) => Probe::Open(file),
        Err(err) => {
            // Read-only directories are normal for a replica that only serves: said once
            // a minute at most, at debug, since nothing is wrong.
            tracing::debug!(
                path = %path.display(),
                "no filesystem clock ({err}); changes are trusted {} s after they land",
                super::consistent::SETTLE_WINDOW.as_secs()
            );
            Probe::Failed(Instant::now())
        }
    }
}

/// Sets the file's times to the filesystem's "now" and reads back when that was.
fn touch(file: &std::fs::File) -> std::io::Result<FsNow> {
    // SAFETY: a valid open descriptor; a null `times` means "now" for both.
    if unsafe { libc::futimens(file.as_raw_fd(), std::ptr::null()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let metadata = file.metadata()?;
    Ok(FsNow {
        at: timestamp(metadata.ctime(), metadata.ctime_nsec()),
        device: metadata.dev(),
    })
}

/// How long a reader waits for a filesystem's clock to leave the tick of the change it is
/// about to read: longer than a kernel tick (1 to 10 ms), far shorter than a re-read of a large
/// directory or a file.
const CLOCK_WAIT: Duration = Duration::from_millis(20);

/// Reads `clock` until it is past `change` or [`CLOCK_WAIT`] is over: the last reading, or
/// `None` once the clock cannot be read.
pub fn await_past(
    change: SystemTime,
    mut clock: impl FnMut() -> Option<SystemTime>,
) -> Option<SystemTime> {
    let give_up = Instant::now() + CLOCK_WAIT;
    loop {
        let now = clock()?;
        if now > change || Instant::now() >= give_up {
            return Some(now);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A `(seconds, nanoseconds)` timestamp as a `SystemTime`; before 1970 counts as 1970, which
/// only ever makes a stamp look older than it is, never newer.
pub fn timestamp(secs: i64, nanos: i64) -> SystemTime {
    u64::try_from(secs)
        .ok()
        .map(|secs| SystemTime::UNIX_EPOCH + Duration::new(secs, u32::try_from(nanos).unwrap_or(0)))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_moves_with_the_filesystem_and_its_probe_is_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let clocks = FsClocks::default();
        let first = clocks
            .now(dir.path())
            .expect("a writable directory has a clock");
        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(dir.path().join("x"), b"x").unwrap();
        let changed = std::fs::metadata(dir.path()).unwrap();
        let second = clocks.now(dir.path()).unwrap();
        assert!(second.at > first.at);
        assert!(second.at >= timestamp(changed.ctime(), changed.ctime_nsec()));
        assert_eq!(second.device, changed.dev());
        assert!(dir.path().join(CLOCK_FILE).exists());
    }

    #[test]
    fn a_probe_that_is_a_symlink_or_a_fifo_is_not_followed_or_opened() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, b"x").unwrap();
        let before = std::fs::metadata(&target).unwrap().modified().unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(CLOCK_FILE)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(FsClocks::default().now(dir.path()), None);
        assert_eq!(
            std::fs::metadata(&target).unwrap().modified().unwrap(),
            before
        );
        // A dangling link creates nothing where it points.
        std::fs::remove_file(dir.path().join(CLOCK_FILE)).unwrap();
        std::os::unix::fs::symlink(outside.path().join("new"), dir.path().join(CLOCK_FILE))
            .unwrap();
        assert_eq!(FsClocks::default().now(dir.path()), None);
        assert!(!outside.path().join("new").exists());
        // A FIFO is neither blocked on nor touched.
        std::fs::remove_file(dir.path().join(CLOCK_FILE)).unwrap();
        let fifo =
            std::ffi::CString::new(dir.path().join(CLOCK_FILE).as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert_eq!(FsClocks::default().now(dir.path()), None);
    }

    #[test]
    fn a_directory_that_cannot_be_written_has_no_clock() {
        let clocks = FsClocks::default();
        assert_eq!(clocks.now(Path::new("/proc/self")), None);
        assert_eq!(clocks.now(Path::new("/nonexistent/wheelhouse")), None);
    }
}
