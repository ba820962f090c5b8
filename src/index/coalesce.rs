//! One run of a piece of work at a time, its result shared by every caller that arrived
//! before it began.
//!
//! A caller may take the result of a run only if that run began after the caller arrived:
//! such a run saw everything that had happened before the caller asked, so its result is as
//! fresh as a run of the caller's own would have been. A run already under way when a caller
//! arrives may have looked before the change the caller must see; the caller waits for the
//! next run, which every caller that arrived meanwhile shares. However many callers pile up,
//! at most one run is in flight and at most one more is waited for.

use std::sync::{Condvar, Mutex, MutexGuard};

pub(super) struct Coalesced<T> {
    flight: Mutex<Flight<T>>,
    landed: Condvar,
}

struct Flight<T> {
    /// How many runs have begun, and how many of them have finished, in order.
    started: u64,
    finished: u64,
    running: bool,
    /// The result of the run that finished last.
    latest: Option<T>,
}

impl<T: Clone> Default for Coalesced<T> {
    fn default() -> Self {
        Self {
            flight: Mutex::new(Flight {
                started: 0,
                finished: 0,
                running: false,
                latest: None,
            }),
            landed: Condvar::new(),
        }
    }
}

impl<T: Clone> Coalesced<T> {
    /// The result of a run of `work` (this caller's, or another's) that began after this call.
    pub(super) fn run(&self, work: impl FnOnce() -> T) -> T {
        let mut flight = self.lock();
        // The first run to begin from now on: the current one, if any, began earlier.
        let wanted = flight.started + 1;
        loop {
            if flight.finished >= wanted {
                if let Some(latest) = &flight.latest {
                    return latest.clone();
                }
            }
            if !flight.running {
                flight.running = true;
                flight.started += 1;
                let this_run = flight.started;
                drop(flight);
                let landing = Landing { owner: self };
                let result = work();
                landing.land(this_run, result.clone());
                return result;
            }
            flight = self.landed.wait(flight).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Flight<T>> {
        self.flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Ends a run: with its result, or, if the work panicked, without one, so that a waiting
/// caller begins the next run instead of waiting forever.
struct Landing<'a, T: Clone> {
    owner: &'a Coalesced<T>,
}

impl<T: Clone> Landing<'_, T> {
    fn land(self, run: u64, result: T) {
        let mut flight = self.owner.lock();
        flight.finished = run;
        flight.latest = Some(result);
        // Drop ends the flight and wakes the waiters.
    }
}

impl<T: Clone> Drop for Landing<'_, T> {
    fn drop(&mut self) {
        self.owner.lock().running = false;
        self.owner.landed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    #[test]
    fn callers_that_arrive_during_a_run_share_the_next_one() {
        let shared = Arc::new(Coalesced::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (entered, first_running) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let first = {
            let (shared, runs) = (shared.clone(), runs.clone());
            std::thread::spawn(move || {
                shared.run(|| {
                    entered.send(()).unwrap();
                    held.recv().unwrap();
                    runs.fetch_add(1, Ordering::SeqCst) + 1
                })
            })
        };
        first_running.recv().unwrap();
        // Sixteen callers arrive while the first run is under way: it may have looked before
        // whatever they must see, so none of them may take its result.
        let callers = 16;
        let arrived = Arc::new(Barrier::new(callers + 1));
        let waiting: Vec<_> = (0..callers)
            .map(|_| {
                let (shared, runs, arrived) = (shared.clone(), runs.clone(), arrived.clone());
                std::thread::spawn(move || {
                    arrived.wait();
                    shared.run(|| {
                        std::thread::sleep(Duration::from_millis(50));
                        runs.fetch_add(1, Ordering::SeqCst) + 1
                    })
                })
            })
            .collect();
        arrived.wait();
        // Let them all reach the wait before the first run ends.
        std::thread::sleep(Duration::from_millis(200));
        release.send(()).unwrap();
        assert_eq!(first.join().unwrap(), 1);
        let results: Vec<usize> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(runs.load(Ordering::SeqCst), 2, "one run for all sixteen");
        assert!(results.iter().all(|&r| r == 2), "{results:?}");
    }

    #[test]
    fn a_caller_never_takes_a_result_older_than_its_arrival() {
        let shared = Arc::new(Coalesced::<u64>::default());
        let clock = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (shared, clock) = (shared.clone(), clock.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let arrival = clock.fetch_add(1, Ordering::SeqCst);
                        // The work reads the clock as it begins: a result older than the
                        // caller's arrival would show a smaller reading.
                        let seen = shared.run(|| clock.load(Ordering::SeqCst));
                        assert!(seen > arrival, "took {seen}, arrived at {arrival}");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }

    #[test]
    fn a_run_that_panics_does_not_strand_the_waiters() {
        let shared = Arc::new(Coalesced::<u32>::default());
        let panicking = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                shared.run(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("the work failed");
                })
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(shared.run(|| 7), 7);
        assert!(panicking.join().is_err());
        assert_eq!(shared.run(|| 8), 8);
    }
}
