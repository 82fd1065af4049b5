//! The end-of-run report: a JSON object for scripts and tests, a short
//! summary for people. Both come from the same [`Report`], so they never
//! disagree. The JSON schema is documented in [`crate::config::HELP`].

use std::collections::BTreeMap;
use std::fmt::{self, Write};

use crate::config::Config;
use crate::json::Value;
use crate::run::Outcome;
use crate::stats::{FailureKind, Percentiles, Stats};

/// What is printed at the end of a run.
#[derive(Debug)]
pub struct Report<'a> {
    config: &'a Config,
    outcome: Outcome,
    latency: Option<Percentiles>,
}

/// At most this many lines of version changes in the summary.
const MAX_CHANGES: usize = 20;

impl<'a> Report<'a> {
    pub fn new(config: &'a Config, mut outcome: Outcome) -> Report<'a> {
        let latency = Percentiles::of(&mut outcome.stats.latencies_us);
        Report {
            config,
            outcome,
            latency,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.outcome.stats
    }

    fn seconds(&self) -> f64 {
        self.outcome.elapsed.as_secs_f64()
    }

    fn rps(&self) -> f64 {
        let seconds = self.seconds();
        if seconds > 0.0 {
            self.stats().requests as f64 / seconds
        } else {
            0.0
        }
    }

    /// How many timeline buckets the run covers.
    fn bucket_count(&self) -> usize {
        let width = self.config.bucket.as_nanos();
        let covered = self.outcome.elapsed.as_nanos().div_ceil(width);
        self.stats()
            .timeline
            .len()
            .max(usize::try_from(covered).unwrap_or(usize::MAX))
    }

    /// The start of bucket `index`, in seconds since the start of the run.
    fn bucket_start(&self, index: usize) -> f64 {
        self.config.bucket.as_secs_f64() * index as f64
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let stats = self.stats();
        let mut failures: Vec<(String, Value)> = stats
            .failures
            .iter()
            .filter(|(kind, _)| matches!(kind, FailureKind::Status(_)))
            .map(|(kind, &n)| (kind.to_string(), n.into()))
            .collect();
        for kind in FailureKind::FIXED {
            let n = stats.failures.get(&kind).copied().unwrap_or(0);
            failures.push((kind.to_string(), n.into()));
        }
        let ms = |pick: fn(&Percentiles) -> u32| -> Value {
            self.latency
                .as_ref()
                .map(|p| f64::from(pick(p)) / 1000.0)
                .into()
        };
        let latency = Value::object([
            ("p50", ms(|p| p.p50)),
            ("p90", ms(|p| p.p90)),
            ("p99", ms(|p| p.p99)),
            ("max", ms(|p| p.max)),
        ]);
        let empty = Default::default();
        let timeline = (0..self.bucket_count())
            .map(|index| {
                let bucket = stats.timeline.get(index).unwrap_or(&empty);
                Value::object([
                    ("t", self.bucket_start(index).into()),
                    ("ok", bucket.ok.into()),
                    ("failed", bucket.failed.into()),
                    ("retried", bucket.retried.into()),
                    ("versions", counts(&bucket.versions)),
                ])
            })
            .collect();
        let first_failures = stats
            .first_failures
            .iter()
            .map(|record| {
                Value::object([
                    ("t", record.at.as_secs_f64().into()),
                    ("kind", record.failure.kind.to_string().into()),
                    ("detail", record.failure.detail.clone().into()),
                ])
            })
            .collect();
        Value::object([
            ("requests", stats.requests.into()),
            ("ok", stats.ok.into()),
            ("failed", stats.failed.into()),
            ("retried", stats.retried.into()),
            ("connections", stats.connections.into()),
            ("failures", Value::Object(failures)),
            ("latency_ms", latency),
            ("rps", self.rps().into()),
            ("duration_s", self.seconds().into()),
            ("stopped_by", self.outcome.stopped_by.name().into()),
            ("url", self.config.url.text.as_str().into()),
            ("mode", self.config.mode.name().into()),
            ("concurrency", (self.config.concurrency as u64).into()),
            ("versions", counts(&stats.versions)),
            ("timeline", Value::Array(timeline)),
            ("first_failures", Value::Array(first_failures)),
        ])
    }

    /// A few lines for a human, each starting with the program's name.
    pub fn summary(&self) -> String {
        let stats = self.stats();
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str("zdd-loadgen: ");
            out.push_str(&text);
            out.push('\n');
        };
        line(format!(
            "{} requests in {:.2} s ({:.1} req/s), stopped by {}",
            stats.requests,
            self.seconds(),
            self.rps(),
            self.outcome.stopped_by.name().replace('_', "-"),
        ));
        line(format!(
            "{} ok, {} failed, {} retried on a new connection, {} connections opened",
            stats.ok, stats.failed, stats.retried, stats.connections
        ));
        if !stats.failures.is_empty() {
            line(format!("failures: {}", list(&stats.failures)));
        }
        if let Some(p) = &self.latency {
            let ms = |us: u32| f64::from(us) / 1000.0;
            line(format!(
                "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.max)
            ));
        }
        if !stats.versions.is_empty() {
            line(format!("versions: {}", list(&stats.versions)));
        }
        let changes = self.version_changes();
        if changes.len() > 1 {
            let mut text = String::from("version changes:");
            for (at, versions) in changes.iter().take(MAX_CHANGES) {
                let _ = write!(text, " {at:.1}s {versions};");
            }
            text.pop();
            if changes.len() > MAX_CHANGES {
                text.push_str(" ...");
            }
            line(text);
        }
        if !stats.first_failures.is_empty() {
            line("first failures:".to_owned());
            for record in &stats.first_failures {
                line(format!(
                    "  {:.3}s {}: {}",
                    record.at.as_secs_f64(),
                    record.failure.kind,
                    record.failure.detail
                ));
            }
        }
        out
    }

    /// Where the set of versions answering changed: the start of each
    /// bucket whose versions differ from the last bucket with any, and
    /// those versions joined by `+`.
    fn version_changes(&self) -> Vec<(f64, String)> {
        let mut changes: Vec<(f64, String)> = Vec::new();
        for (index, bucket) in self.stats().timeline.iter().enumerate() {
            if bucket.versions.is_empty() {
                continue;
            }
            let versions: Vec<&str> = bucket.versions.keys().map(String::as_str).collect();
            let versions = versions.join("+");
            if changes.last().map(|(_, last)| last) != Some(&versions) {
                changes.push((self.bucket_start(index), versions));
            }
        }
        changes
    }
}

/// A JSON object of counts.
fn counts(map: &BTreeMap<String, u64>) -> Value {
    Value::object(map.iter().map(|(key, &n)| (key.clone(), n.into())))
}

/// `name count, name count` for the summary.
fn list<K: fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    map.iter()
        .map(|(key, n)| format!("{key} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Command;
    use crate::run::StopReason;
    use crate::stats::Failure;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> Config {
        let args = [
            "--url",
            "http://127.0.0.1:9/",
            "--bucket",
            "100ms",
            "-c",
            "2",
        ];
        match Command::from_args(args.map(Into::into)).unwrap() {
            Command::Run(config) => *config,
            Command::Help => unreachable!(),
        }
    }

    fn outcome() -> Outcome {
        let mut stats = Stats::new(ms(100));
        stats.record_ok(ms(10), ms(2), false, "v1");
        stats.record_ok(ms(20), ms(4), true, "v1");
        stats.record_ok(ms(120), ms(1), false, "v2");
        stats.record_ok(ms(130), ms(3), false, "v1");
        stats.record_failure(
            ms(140),
            false,
            Failure {
                kind: FailureKind::Status(503),
                detail: "HTTP 503 from v1".to_owned(),
            },
        );
        stats.record_ok(ms(310), ms(5), false, "v2");
        stats.connections = 2;
        Outcome {
            stats,
            elapsed: ms(450),
            stopped_by: StopReason::Duration,
        }
    }

    #[test]
    fn json_report() {
        let config = config();
        let report = Report::new(&config, outcome());
        let json = report.to_json().to_string();
        assert!(json.starts_with(
            r#"{"requests":6,"ok":5,"failed":1,"retried":1,"connections":2,"failures":{"status_503":1,"connect_refused":0,"reset":0,"timeout":0,"truncated":0,"other":0},"latency_ms":{"p50":3.000,"p90":5.000,"p99":5.000,"max":5.000},"rps":13.333,"duration_s":0.450,"stopped_by":"duration","url":"http://127.0.0.1:9/","mode":"keepalive","concurrency":2,"versions":{"v1":3,"v2":2},"timeline":[{"t":0.000,"ok":2,"failed":0,"retried":1,"versions":{"v1":2}},{"t":0.100,"ok":2,"failed":1,"retried":0,"versions":{"v1":1,"v2":1}},{"t":0.200,"ok":0,"failed":0,"retried":0,"versions":{}},{"t":0.300,"ok":1,"failed":0,"retried":0,"versions":{"v2":1}},{"t":0.400,"ok":0,"failed":0,"retried":0,"versions":{}}],"first_failures":[{"t":0.140,"kind":"status_503","detail":"HTTP 503 from v1"}]}"#
        ), "{json}");
    }

    #[test]
    fn empty_run() {
        let config = config();
        let outcome = Outcome {
            stats: Stats::new(ms(100)),
            elapsed: Duration::ZERO,
            stopped_by: StopReason::Signal,
        };
        let report = Report::new(&config, outcome);
        let json = report.to_json().to_string();
        assert!(
            json.contains(
                r#""latency_ms":{"p50":null,"p90":null,"p99":null,"max":null},"rps":0.000"#
            ),
            "{json}"
        );
        assert!(json.contains(r#""timeline":[]"#), "{json}");
        assert!(report.summary().contains("0 requests"));
    }

    #[test]
    fn human_summary() {
        let config = config();
        let summary = Report::new(&config, outcome()).summary();
        assert!(summary.contains("6 requests in 0.45 s"), "{summary}");
        assert!(summary.contains("5 ok, 1 failed, 1 retried"), "{summary}");
        assert!(summary.contains("failures: status_503 1"), "{summary}");
        assert!(summary.contains("versions: v1 3, v2 2"), "{summary}");
        assert!(
            summary.contains("version changes: 0.0s v1; 0.1s v1+v2; 0.3s v2\n"),
            "{summary}"
        );
        assert!(
            summary.contains("0.140s status_503: HTTP 503 from v1"),
            "{summary}"
        );
        assert!(summary
            .lines()
            .all(|line| line.starts_with("zdd-loadgen: ")));
    }
}
