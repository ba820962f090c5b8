//! One run of a piece of work at a time, its result shared by every caller that arrived
//! before it began.
//!
//! A caller may take the result of a run only if that run began after the caller arrived:
//! such a run saw everything that had happened before the caller asked, so its result is as
//! fresh as a run of the caller's own would have been. A run already under way when a caller
//! arrives may have looked before the change the caller must see; the caller waits for the
//! next run, which every caller that arrived meanwhile shares. However many callers pile up,
//! at most one run is in flight and at most one more is waited for.
//!
//! A caller on the async runtime waits as a task while a run is in flight
//! ([`Coalesced::join_async`]), and takes a thread of the blocking pool only to run the work
//! itself: parking a thread per waiting request and waking them all at each landing costs two
//! context switches a request, more than the few-microsecond check they share.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub(super) struct Coalesced<T> {
    flight: Mutex<Flight<T>>,
    /// Wakes the callers waiting as threads.
    landed: Condvar,
    /// Wakes the callers waiting as tasks.
    landed_async: tokio::sync::Notify,
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
            landed_async: tokio::sync::Notify::new(),
        }
    }
}

impl<T: Clone> Flight<T> {
    /// The latest result, if it comes from run `wanted` or a later one.
    fn result_of(&self, wanted: u64) -> Option<T> {
        (self.finished >= wanted)
            .then(|| self.latest.clone())
            .flatten()
    }

    /// Marks a run begun and returns its number, if none is in flight.
    fn begin(&mut self) -> Option<u64> {
        if self.running {
            return None;
        }
        self.running = true;
        self.started += 1;
        Some(self.started)
    }
}

/// A caller's place: the first run that may serve it is the first to begin after it arrived.
/// A caller that waited as a task and then runs the work itself keeps it, so a run another
/// caller began meanwhile (after this one arrived) still serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl<T: Clone> Coalesced<T> {
    /// The result of a run of `work` (this caller's, or another's) that began after this call.
    pub(super) fn run(&self, work: impl FnOnce() -> T) -> T {
        let flight = self.lock();
        // The first run to begin from now on: the current one, if any, began earlier.
        let wanted = flight.started + 1;
        self.run_from(flight, wanted, work)
    }

    /// As [`Coalesced::run`], for a caller that arrived when `ticket` was issued.
    pub(super) fn run_with(&self, ticket: Ticket, work: impl FnOnce() -> T) -> T {
        self.run_from(self.lock(), ticket.0, work)
    }

    fn run_from(
        &self,
        mut flight: MutexGuard<'_, Flight<T>>,
        wanted: u64,
        work: impl FnOnce() -> T,
    ) -> T {
        loop {
            if let Some(result) = flight.result_of(wanted) {
                return result;
            }
            if let Some(run) = flight.begin() {
                drop(flight);
                return self.execute(run, work);
            }
            flight = self.landed.wait(flight).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// For a caller on the async runtime, before it takes a blocking thread to call
    /// [`Coalesced::run`]: while a run is in flight, waits for it as a task, not a thread.
    /// The result of a run that began after this call, if one landed meanwhile; `None` when no
    /// run is in flight, and the caller's own `run` will most likely begin one.
    pub(super) async fn join_async(self: Arc<Self>) -> Result<T, Ticket> {
        let wanted = self.lock().started + 1;
        loop {
            let landed = {
                let flight = self.lock();
                if let Some(result) = flight.result_of(wanted) {
                    return Ok(result);
                }
                if !flight.running {
                    return Err(Ticket(wanted));
                }
                // Made while the lock is held: a landing after the lock is released wakes it
                // even before it is first polled.
                self.landed_async.notified()
            };
            landed.await;
        }
    }

    fn execute(&self, run: u64, work: impl FnOnce() -> T) -> T {
        let landing = Landing { owner: self };
        let result = work();
        landing.land(run, result.clone());
        result
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
        self.owner.landed_async.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    /// Begins run 1 of `shared` on a thread, and returns once it is under way: it ends when
    /// the sender is used, counting itself in `runs`.
    fn hold_a_run(
        shared: &Arc<Coalesced<usize>>,
        runs: &Arc<AtomicUsize>,
    ) -> (std::thread::JoinHandle<usize>, std::sync::mpsc::Sender<()>) {
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
        (first, release)
    }

    #[test]
    fn callers_that_arrive_during_a_run_share_the_next_one() {
        let shared = Arc::new(Coalesced::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (first, release) = hold_a_run(&shared, &runs);
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

    /// What a request on the async runtime does: waits as a task, then runs on a thread.
    async fn run_from_task<T: Clone + Send + 'static>(
        shared: Arc<Coalesced<T>>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        match shared.clone().join_async().await {
            Ok(result) => result,
            Err(ticket) => tokio::task::spawn_blocking(move || shared.run_with(ticket, work))
                .await
                .unwrap(),
        }
    }

    #[test]
    fn callers_waiting_as_tasks_share_the_next_run_with_those_waiting_as_threads() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let shared = Arc::new(Coalesced::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (first, release) = hold_a_run(&shared, &runs);
        let arrived = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (shared, runs, arrived) = (shared.clone(), runs.clone(), arrived.clone());
                // Counted in the same poll that registers the task's wait: a task counted is
                // a task waiting, however busy the machine is.
                runtime.spawn(async move {
                    arrived.fetch_add(1, Ordering::SeqCst);
                    run_from_task(shared, move || {
                        std::thread::sleep(Duration::from_millis(50));
                        runs.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
                })
            })
            .collect();
        let thread = {
            let (shared, runs) = (shared.clone(), runs.clone());
            std::thread::spawn(move || shared.run(|| runs.fetch_add(1, Ordering::SeqCst) + 1))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while arrived.load(Ordering::SeqCst) < 64 {
            assert!(std::time::Instant::now() < deadline, "the tasks never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        // And the thread, which has no such count, a moment to reach its wait.
        std::thread::sleep(Duration::from_millis(200));
        release.send(()).unwrap();
        assert_eq!(first.join().unwrap(), 1);
        let results: Vec<usize> = runtime.block_on(async {
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            results
        });
        assert_eq!(thread.join().unwrap(), 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2, "one run for all 65");
        assert!(results.iter().all(|&r| r == 2), "{results:?}");
    }

    #[test]
    fn a_task_never_takes_a_result_older_than_its_arrival() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let shared = Arc::new(Coalesced::<u64>::default());
        let clock = Arc::new(std::sync::atomic::AtomicU64::new(0));
        runtime.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (shared, clock) = (shared.clone(), clock.clone());
                    tokio::spawn(async move {
                        for _ in 0..200 {
                            let arrival = clock.fetch_add(1, Ordering::SeqCst);
                            let reading = clock.clone();
                            let seen = run_from_task(shared.clone(), move || {
                                reading.load(Ordering::SeqCst)
                            })
                            .await;
                            assert!(seen > arrival, "took {seen}, arrived at {arrival}");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
    }

    #[test]
    fn a_task_finds_no_run_in_flight_and_runs_its_own() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let shared = Arc::new(Coalesced::<u32>::default());
        assert!(runtime.block_on(shared.clone().join_async()).is_err());
        shared.run(|| 1);
        // Run 1 landed before this call: it may not be taken.
        assert!(runtime.block_on(shared.clone().join_async()).is_err());
    }
}
