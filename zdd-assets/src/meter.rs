//! Progress of a long publish on stderr: files and bytes so far, at most
//! one line per interval (`--progress-every`), so a publish of a large
//! build says what it is doing instead of nothing until it ends. `-q`
//! silences it; warnings still go into the record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zdd_core::cli::Progress;

/// Counts files as they are hashed and stored.
pub struct Meter {
    progress: Progress,
    every: Duration,
    files_total: u64,
    bytes_total: u64,
    files: AtomicU64,
    bytes: AtomicU64,
    last: Mutex<Instant>,
}

impl Meter {
    pub fn new(progress: Progress, every: Duration, files_total: u64, bytes_total: u64) -> Meter {
        Meter {
            progress,
            every,
            files_total,
            bytes_total,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    /// One more file of `bytes` is done; says so when the interval passed.
    pub fn done(&self, bytes: u64) {
        let files = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let Ok(mut last) = self.last.try_lock() else {
            return; // another thread is printing
        };
        if last.elapsed() < self.every {
            return;
        }
        *last = Instant::now();
        self.progress.info(format_args!(
            "{files} of {} files, {} of {} so far",
            self.files_total,
            megabytes(bytes),
            megabytes(self.bytes_total)
        ));
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
