//! What the workers count.
//!
//! Each worker fills its own [`Stats`] without locks and the run merges
//! them at the end, so counting costs the requests nothing. Every latency
//! is kept (4 bytes each, about 4 MB per million requests) so that the
//! percentiles are exact rather than estimated from a histogram.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Why a request failed. The order is the report's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// A complete response with a status outside 2xx.
    Status(u16),
    /// Nothing listened on the port (`ECONNREFUSED`).
    ConnectRefused,
    /// The connection was reset (`ECONNRESET`, `EPIPE`, `ECONNABORTED`).
    Reset,
    /// The request did not finish within `--timeout`.
    Timeout,
    /// The connection was closed before the response was complete
    /// (including before its first byte).
    Truncated,
    /// Anything else: bad HTTP, unreachable network, ...
    Other,
}

impl FailureKind {
    /// The kinds always present in the report, even at zero.
    pub const FIXED: [FailureKind; 5] = [
        FailureKind::ConnectRefused,
        FailureKind::Reset,
        FailureKind::Timeout,
        FailureKind::Truncated,
        FailureKind::Other,
    ];
}

/// The report's name for the kind, e.g. `status_503` or `reset`.
impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Status(status) => write!(f, "status_{status}"),
            FailureKind::ConnectRefused => f.write_str("connect_refused"),
            FailureKind::Reset => f.write_str("reset"),
            FailureKind::Timeout => f.write_str("timeout"),
            FailureKind::Truncated => f.write_str("truncated"),
            FailureKind::Other => f.write_str("other"),
        }
    }
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// What happened, for a human.
    pub detail: String,
}

/// A failure with the time it happened, for `first_failures`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    /// Since the start of the run.
    pub at: Duration,
    pub failure: Failure,
}

/// How many failures are kept with their details.
pub const FIRST_FAILURES: usize = 10;

/// The requests that finished within one `--bucket` of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    pub ok: u64,
    pub failed: u64,
    pub retried: u64,
    /// Successful responses by app version.
    pub versions: BTreeMap<String, u64>,
}

/// Counts for one worker, or (merged) for the whole run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    bucket_width: Duration,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub retried: u64,
    /// TCP connections opened (attempts, including refused ones).
    pub connections: u64,
    /// Latency of each successful request, in microseconds.
    pub latencies_us: Vec<u32>,
    pub failures: BTreeMap<FailureKind, u64>,
    pub versions: BTreeMap<String, u64>,
    /// Bucket `i` covers `[i, i + 1) * bucket_width` since the start.
    pub timeline: Vec<Bucket>,
    /// The earliest failures, at most [`FIRST_FAILURES`], earliest first.
    pub first_failures: Vec<FailureRecord>,
}

impl Stats {
    pub fn new(bucket_width: Duration) -> Stats {
        assert!(!bucket_width.is_zero(), "buckets must have a width");
        Stats {
            bucket_width,
            requests: 0,
            ok: 0,
            failed: 0,
            retried: 0,
            connections: 0,
            latencies_us: Vec::new(),
            failures: BTreeMap::new(),
            versions: BTreeMap::new(),
            timeline: Vec::new(),
            first_failures: Vec::new(),
        }
    }

    pub fn bucket_width(&self) -> Duration {
        self.bucket_width
    }

    /// The bucket of a request that finished `at` after the start.
    fn bucket(&mut self, at: Duration) -> &mut Bucket {
        let index =
            usize::try_from(at.as_nanos() / self.bucket_width.as_nanos()).unwrap_or(usize::MAX - 1);
        if self.timeline.len() <= index {
            self.timeline.resize(index + 1, Bucket::default());
        }
        &mut self.timeline[index]
    }

    /// Counts a 2xx response from `version` that finished `at` after the
    /// start and took `latency`; `retried` if it took a second connection.
    pub fn record_ok(&mut self, at: Duration, latency: Duration, retried: bool, version: &str) {
        self.requests += 1;
        self.ok += 1;
        self.retried += u64::from(retried);
        self.latencies_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        add_one(&mut self.versions, version);
        let bucket = self.bucket(at);
        bucket.ok += 1;
        bucket.retried += u64::from(retried);
        add_one(&mut bucket.versions, version);
    }

    /// Counts a request that failed `at` after the start.
    pub fn record_failure(&mut self, at: Duration, retried: bool, failure: Failure) {
        self.requests += 1;
        self.failed += 1;
        self.retried += u64::from(retried);
        *self.failures.entry(failure.kind).or_default() += 1;
        let bucket = self.bucket(at);
        bucket.failed += 1;
        bucket.retried += u64::from(retried);
        // A worker's failures come in time order, so the first ten are its
        // earliest.
        if self.first_failures.len() < FIRST_FAILURES {
            self.first_failures.push(FailureRecord { at, failure });
        }
    }

    /// Adds `other` (with the same bucket width) into `self`.
    pub fn merge(&mut self, other: Stats) {
        assert_eq!(self.bucket_width, other.bucket_width);
        self.requests += other.requests;
        self.ok += other.ok;
        self.failed += other.failed;
        self.retried += other.retried;
        self.connections += other.connections;
        self.latencies_us.extend(other.latencies_us);
        for (kind, n) in other.failures {
            *self.failures.entry(kind).or_default() += n;
        }
        merge_counts(&mut self.versions, other.versions);
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize(other.timeline.len(), Bucket::default());
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(other.timeline) {
            mine.ok += theirs.ok;
            mine.failed += theirs.failed;
            mine.retried += theirs.retried;
            merge_counts(&mut mine.versions, theirs.versions);
        }
        self.first_failures.extend(other.first_failures);
        self.first_failures.sort_by_key(|record| record.at);
        self.first_failures.truncate(FIRST_FAILURES);
    }
}

/// Counts one more `key`, allocating only for a key not seen before.
fn add_one(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

fn merge_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (key, n) in from {
        *into.entry(key).or_default() += n;
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub max: u32,
}

impl Percentiles {
    /// The percentiles of `latencies` (sorted in place), or `None` if there
    /// are none.
    pub fn of(latencies: &mut [u32]) -> Option<Percentiles> {
        latencies.sort_unstable();
        Some(Percentiles {
            p50: percentile(latencies, 50.0)?,
            p90: percentile(latencies, 90.0)?,
            p99: percentile(latencies, 99.0)?,
            max: *latencies.last()?,
        })
    }
}

/// The `p`th percentile (0 < p <= 100) of `sorted` by the nearest-rank
/// method: the smallest value such that at least p% of the values are less
/// than or equal to it. Always one of the values, never an interpolation,
/// so "p99 = 12 ms" means a request really took 12 ms.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 90.0), Some(90));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.1), Some(1));
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 90.0), Some(4));
        assert_eq!(percentile(&[], 50.0), None);
        // With fewer than 100 values, p99 is the maximum.
        let ten: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile(&ten, 99.0), Some(10));
        assert_eq!(percentile(&ten, 90.0), Some(9));
    }

    #[test]
    fn percentiles_sort_first() {
        let mut values = vec![5, 1, 4, 2, 3];
        let p = Percentiles::of(&mut values).unwrap();
        assert_eq!(
            p,
            Percentiles {
                p50: 3,
                p90: 5,
                p99: 5,
                max: 5
            }
        );
        assert_eq!(Percentiles::of(&mut []), None);
    }

    fn failure(kind: FailureKind) -> Failure {
        Failure {
            kind,
            detail: kind.to_string(),
        }
    }

    #[test]
    fn records_and_merges() {
        let width = 100 * MS;
        let mut a = Stats::new(width);
        a.record_ok(10 * MS, 2 * MS, false, "v1");
        a.record_ok(150 * MS, 3 * MS, true, "v1");
        a.record_failure(160 * MS, false, failure(FailureKind::Status(503)));
        let mut b = Stats::new(width);
        b.record_ok(20 * MS, 4 * MS, false, "v2");
        b.record_failure(5 * MS, true, failure(FailureKind::Reset));
        b.record_ok(350 * MS, 1 * MS, false, "v2");
        b.connections = 3;
        a.merge(b);

        assert_eq!(
            (a.requests, a.ok, a.failed, a.retried, a.connections),
            (6, 4, 2, 2, 3)
        );
        let mut latencies = a.latencies_us.clone();
        latencies.sort_unstable();
        assert_eq!(latencies, [1000, 2000, 3000, 4000]);
        assert_eq!(a.failures[&FailureKind::Status(503)], 1);
        assert_eq!(a.failures[&FailureKind::Reset], 1);
        assert_eq!(a.versions["v1"], 2);
        assert_eq!(a.versions["v2"], 2);
        assert_eq!(a.timeline.len(), 4);
        assert_eq!(
            (
                a.timeline[0].ok,
                a.timeline[0].failed,
                a.timeline[0].retried
            ),
            (2, 1, 1)
        );
        assert_eq!(a.timeline[0].versions.len(), 2);
        assert_eq!(
            (
                a.timeline[1].ok,
                a.timeline[1].failed,
                a.timeline[1].retried
            ),
            (1, 1, 1)
        );
        assert_eq!(a.timeline[2], Bucket::default());
        assert_eq!(a.timeline[3].versions["v2"], 1);
        let kinds: Vec<FailureKind> = a.first_failures.iter().map(|r| r.failure.kind).collect();
        assert_eq!(kinds, [FailureKind::Reset, FailureKind::Status(503)]);
    }

    #[test]
    fn keeps_only_the_first_failures() {
        let mut a = Stats::new(MS);
        let mut b = Stats::new(MS);
        for i in 0..20 {
            a.record_failure(MS * (2 * i), false, failure(FailureKind::Timeout));
            b.record_failure(MS * (2 * i + 1), false, failure(FailureKind::Other));
        }
        a.merge(b);
        assert_eq!(a.failed, 40);
        let times: Vec<u128> = a.first_failures.iter().map(|r| r.at.as_millis()).collect();
        assert_eq!(times, (0..10).collect::<Vec<u128>>());
    }

    #[test]
    fn failure_kind_names_and_order() {
        let names: Vec<String> = [FailureKind::Status(503), FailureKind::ConnectRefused]
            .iter()
            .chain(&FailureKind::FIXED[1..])
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "status_503",
                "connect_refused",
                "reset",
                "timeout",
                "truncated",
                "other"
            ]
        );
        assert!(FailureKind::Status(599) < FailureKind::ConnectRefused);
    }
}
