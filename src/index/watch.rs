//! pypiserver's `cached-dir`: one scan kept per process and thrown away when inotify reports a
//! change under a root, or when this process publishes or removes a file. Fast, and as stale as
//! pypiserver's on shared storage: inotify never hears of a change made by another host over
//! NFS, which is why `consistent-dir` is the default.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use notify::{RecursiveMode, Watcher};

use super::{Backend, ScanBackend, Snapshot};

pub struct WatchBackend {
    scan: ScanBackend,
    cached: Mutex<Option<Arc<Snapshot>>>,
    dirty: Arc<AtomicBool>,
    /// Kept alive for as long as the backend: dropping it stops the watch.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl WatchBackend {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        let dirty = Arc::new(AtomicBool::new(true));
        let flag = dirty.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reads (our own scans open the directories) change nothing; any other event, an
            // error included, may mean a missed change: rescan.
            if !matches!(&event, Ok(event) if event.kind.is_access()) {
                flag.store(true, Ordering::SeqCst);
            }
        })
        .and_then(|mut watcher| {
            for root in &roots {
                watcher.watch(root, RecursiveMode::Recursive)?;
            }
            Ok(watcher)
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(
                    "cached-dir: cannot watch the package directories ({err}); \
                     changes not made through this process will not be seen"
                );
                None
            }
        };
        Self {
            scan: ScanBackend::new(roots),
            cached: Mutex::new(None),
            dirty,
            _watcher: watcher,
        }
    }
}

impl Backend for WatchBackend {
    fn snapshot(&self) -> std::io::Result<Arc<Snapshot>> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        // Cleared before the scan: an event arriving during it marks the result dirty again.
        let dirty = self.dirty.swap(false, Ordering::SeqCst);
        match &*cached {
            Some(snapshot) if !dirty => Ok(snapshot.clone()),
            _ => {
                let snapshot = self.scan.snapshot()?;
                *cached = Some(snapshot.clone());
                Ok(snapshot)
            }
        }
    }

    fn invalidate(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn count(backend: &WatchBackend) -> usize {
        backend.snapshot().unwrap().files().count()
    }

    #[test]
    fn the_cache_is_kept_until_inotify_reports_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let backend = WatchBackend::new(vec![dir.path().to_owned()]);
        let first = backend.snapshot().unwrap();
        assert!(Arc::ptr_eq(&first, &backend.snapshot().unwrap()));
        std::fs::write(dir.path().join("demo-1.0-py3-none-any.whl"), b"x").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while count(&backend) == 0 {
            assert!(
                Instant::now() < deadline,
                "inotify never reported the new file"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let cached = backend.snapshot().unwrap();
        assert!(Arc::ptr_eq(&cached, &backend.snapshot().unwrap()));
        backend.invalidate();
        assert!(!Arc::ptr_eq(&cached, &backend.snapshot().unwrap()));
    }
}
