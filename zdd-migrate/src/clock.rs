//! Timestamps and the runner's name for the history table: RFC 3339 in
//! UTC, and `user@host`, as every zdd record writes them
//! ([`zdd_core::time`]).

use std::time::SystemTime;

/// Now, as `2026-11-27T09:42:31.123Z`.
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// `time` as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    zdd_core::time::rfc3339_of(time)
}

/// Who runs the migrations: `user@host` (`ZDD_MIGRATE_RUNNER` overrides
/// it, e.g. with a CI job's name).
pub fn runner() -> String {
    if let Ok(runner) = std::env::var("ZDD_MIGRATE_RUNNER") {
        if !runner.trim().is_empty() {
            return runner.trim().to_owned();
        }
    }
    zdd_core::time::user_at_host()
}
