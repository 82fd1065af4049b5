//! A run: start the workers, watch the stop conditions, collect the counts.
//!
//! The main thread is the only one that watches the clock, the
//! `--until-file` and the signals, polling every few milliseconds; the
//! workers only look at one shared flag between requests. That keeps
//! the workers' loop free of system calls that are not requests, and it is
//! why a stop never cuts a request short: a worker that is mid-request
//! finishes it and counts it like any other.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::config::Config;
use crate::stats::Stats;
use crate::sys;
use crate::worker::{self, Shared};

/// How often the stop conditions are looked at. It bounds how late a stop
/// is noticed, e.g. after the `--until-file` appears.
const POLL: Duration = Duration::from_millis(10);

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    UntilFile,
    Requests,
    Signal,
}

impl StopReason {
    /// The report's name for it.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Duration => "duration",
            StopReason::UntilFile => "until_file",
            StopReason::Requests => "requests",
            StopReason::Signal => "signal",
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    /// All workers' counts, merged.
    pub stats: Stats,
    /// From the start until the last request in flight at the stop ended.
    pub elapsed: Duration,
    pub stopped_by: StopReason,
}

/// Runs the load described by `config` until a stop condition is met.
/// Fails only if a worker thread cannot be started (or panics).
pub fn run(config: &Config) -> io::Result<Outcome> {
    let shared = Arc::new(Shared::new(config.clone()));
    let workers = sys::with_stop_signals_blocked(|| spawn_workers(&shared))?;
    let stopped_by = watch(&shared, &workers);
    shared.stop.store(true, Ordering::Relaxed);
    let mut stats = Stats::new(config.bucket);
    for worker in workers {
        let worker_stats = worker
            .join()
            .map_err(|_| io::Error::other("a worker thread panicked"))?;
        stats.merge(worker_stats);
    }
    Ok(Outcome {
        stats,
        elapsed: shared.start.elapsed(),
        stopped_by,
    })
}

fn spawn_workers(shared: &Arc<Shared>) -> io::Result<Vec<JoinHandle<Stats>>> {
    let mut workers = Vec::with_capacity(shared.config.concurrency);
    for index in 0..shared.config.concurrency {
        let shared_by_worker = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name(format!("worker-{index}"))
            // Workers keep little on the stack; thousands of them should
            // not reserve 2 MiB each.
            .stack_size(256 * 1024)
            .spawn(move || worker::run(&shared_by_worker, index));
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(error) => {
                shared.stop.store(true, Ordering::Relaxed);
                for worker in workers {
                    let _ = worker.join();
                }
                return Err(io::Error::new(
                    error.kind(),
                    format!("cannot start worker {index}: {error}"),
                ));
            }
        }
    }
    Ok(workers)
}

/// Waits for the first stop condition and says which it was.
fn watch(shared: &Shared, workers: &[JoinHandle<Stats>]) -> StopReason {
    let config = &shared.config;
    loop {
        if sys::stop_signalled() {
            return StopReason::Signal;
        }
        let elapsed = shared.start.elapsed();
        if config.duration.is_some_and(|duration| elapsed >= duration) {
            return StopReason::Duration;
        }
        if config.until_file.as_ref().is_some_and(|path| path.exists()) {
            return StopReason::UntilFile;
        }
        // Workers end on their own only when `--requests` are all sent.
        if workers.iter().all(JoinHandle::is_finished) {
            return StopReason::Requests;
        }
        let nap = match config.duration {
            Some(duration) => POLL.min(duration.saturating_sub(elapsed)),
            None => POLL,
        };
        thread::sleep(nap);
    }
}
