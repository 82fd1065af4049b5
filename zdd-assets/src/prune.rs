//! `prune`: delete old releases, then the pool files nothing retained
//! uses.
//!
//! A release goes only when **both** hold: it is outside the newest N
//! releases, and it stopped being live more than the minimum age ago. The
//! age runs from when it *stopped being live* (from the history), not from
//! file times: a release published a month ago and live until a minute
//! ago is exactly the one whose pages browsers still hold. A release that
//! was never live counts from its creation. The live release is never
//! deleted, whatever N says.
//!
//! The pool and the objects are then swept: a pool file is deleted only
//! when no retained release's manifest lists it, an object only when no
//! retained release has a file with its sha256. A release folder holds
//! its own hard link to each of its files, so even a wrong sweep could
//! not take a byte from a kept release: it would only cost the next
//! publish a copy. If a retained release's manifest cannot be
//! read, nothing is deleted at all (exit 1): the sweep cannot know what
//! that release needs. Releases are removed by renaming them into `tmp/`
//! first, so a killed prune leaves every release whole or gone, and pool
//! files are deleted only after their releases are: a prune cut short
//! leaves unreferenced files, which the next one sweeps.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use zdd_core::{Error, Result};

use crate::manifest::Manifest;
use crate::record::{Period, PruneRecord};
use crate::root::{io_failed, Activation, Listed, Root};
use crate::time;

/// What the rule needs to know about a release.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub created_ms: u64,
    pub live: bool,
    /// The end of its last live period; `None` if never live (or live now).
    pub live_until_ms: Option<u64>,
}

/// Why a release is kept, or that it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Live,
    /// Among the newest N.
    Recent,
    /// Stopped being live (or was created) less than the minimum age ago.
    Young,
    Delete,
}

/// The rule, for releases given oldest first.
pub fn decide(releases: &[Candidate], keep: usize, min_age: Duration, now_ms: u64) -> Vec<Verdict> {
    let newest_from = releases.len().saturating_sub(keep);
    let min_age_ms = min_age.as_millis() as u64;
    releases
        .iter()
        .enumerate()
        .map(|(i, release)| {
            if release.live {
                Verdict::Live
            } else if i >= newest_from {
                Verdict::Recent
            } else {
                let since = release.live_until_ms.unwrap_or(release.created_ms);
                if now_ms.saturating_sub(since) > min_age_ms {
                    Verdict::Delete
                } else {
                    Verdict::Young
                }
            }
        })
        .collect()
}

/// Each release's live periods, from the activation history (the last
/// activation's period is open if that release is live).
pub fn periods(history: &[Activation], id: &str, live: Option<&str>) -> Vec<(u64, Option<u64>)> {
    let mut periods = Vec::new();
    for (i, activation) in history.iter().enumerate() {
        if activation.release != id {
            continue;
        }
        let until = history.get(i + 1).map(|next| next.at_ms);
        if until.is_none() && live != Some(id) {
            // The pointer no longer says so; it ended when we cannot tell.
            periods.push((activation.at_ms, Some(activation.at_ms)));
        } else {
            periods.push((activation.at_ms, until));
        }
    }
    periods
}

/// The periods as a record shows them.
pub fn period_records(periods: &[(u64, Option<u64>)]) -> Vec<Period> {
    periods
        .iter()
        .map(|(from, until)| Period {
            from: time::rfc3339(*from),
            until: until.map(time::rfc3339),
        })
        .collect()
}

/// What a prune does (or would do).
pub struct Plan {
    pub releases: Vec<(Listed, Option<u64>)>,
    /// Pool files, by pool path.
    pub files: Vec<(String, u64)>,
    /// Objects, by sha256.
    pub objects: Vec<(String, u64)>,
    pub kept: Vec<String>,
}

/// Decides what goes, without changing anything.
pub fn plan(
    root: &Root,
    keep: usize,
    min_age: Duration,
    now_ms: u64,
) -> Result<(Plan, Vec<Activation>, bool)> {
    let (history, reconciled) = root.history()?;
    let live = root.live_release()?;
    let listed = root.list_releases()?;
    let candidates: Vec<Candidate> = listed
        .iter()
        .map(|l| {
            let periods = periods(&history, &l.id, live.as_deref());
            Candidate {
                id: l.id.clone(),
                created_ms: l.meta.as_ref().map_or(now_ms, |m| m.created_ms),
                live: live.as_deref() == Some(l.id.as_str()),
                live_until_ms: periods.last().and_then(|(_, until)| *until),
            }
        })
        .collect();
    let verdicts = decide(&candidates, keep, min_age, now_ms);
    let mut releases = Vec::new();
    let mut kept = Vec::new();
    let mut needed = HashSet::new();
    let mut contents = HashSet::new();
    for ((l, candidate), verdict) in listed.into_iter().zip(&candidates).zip(verdicts) {
        if verdict == Verdict::Delete {
            releases.push((l, candidate.live_until_ms));
            continue;
        }
        let manifest = Manifest::read(&root.release(&l.id).join("manifest.json")).map_err(|e| {
            Error::Failed(format!(
                "release {} is kept but its manifest cannot be read, so the pool cannot be \
                 swept safely; nothing was deleted ({e})",
                l.id
            ))
        })?;
        for entry in manifest.files.into_values() {
            needed.extend(entry.hashed);
            contents.insert(entry.sha256);
        }
        kept.push(l.id);
    }
    let mut files = Vec::new();
    let pool = root.pool();
    walk_pool(&pool, "", &mut |path, bytes| {
        if !needed.contains(path) {
            files.push((path.to_owned(), bytes));
        }
    })?;
    files.sort();
    let mut objects = Vec::new();
    walk_pool(&root.objects(), "", &mut |sha, bytes| {
        if !contents.contains(sha) {
            objects.push((sha.to_owned(), bytes));
        }
    })?;
    objects.sort();
    Ok((
        Plan {
            releases,
            files,
            objects,
            kept,
        },
        history,
        reconciled,
    ))
}

fn walk_pool(dir: &Path, prefix: &str, found: &mut dyn FnMut(&str, u64)) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_failed("listing", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_failed("listing", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = entry
            .metadata()
            .map_err(|e| io_failed("reading", &entry.path(), e))?;
        if meta.is_dir() {
            walk_pool(&entry.path(), &path, found)?;
        } else {
            found(&path, meta.len());
        }
    }
    Ok(())
}

/// Carries out a plan (under the lock).
pub fn execute(root: &Root, plan: &Plan) -> Result<()> {
    for (listed, _) in &plan.releases {
        let dir = root.release(&listed.id);
        let doomed = root.tmp_path("pruned");
        fs::rename(&dir, &doomed).map_err(|e| io_failed("removing the release", &dir, e))?;
        fs::remove_dir_all(&doomed).map_err(|e| io_failed("removing", &doomed, e))?;
    }
    let objects = root.objects();
    for (sha, _) in &plan.objects {
        remove_file(&objects.join(sha))?;
    }
    let pool = root.pool();
    let mut folders = HashSet::new();
    for (path, _) in &plan.files {
        remove_file(&pool.join(path))?;
        let mut folder = crate::url::parent(path);
        while !folder.is_empty() {
            folders.insert(folder.to_owned());
            folder = crate::url::parent(folder);
        }
    }
    // Deepest first; a folder that still holds files stays.
    let mut folders: Vec<String> = folders.into_iter().collect();
    folders.sort_by_key(|f| std::cmp::Reverse(f.matches('/').count()));
    for folder in folders {
        let _ = fs::remove_dir(pool.join(folder));
    }
    Ok(())
}

/// Removes a file that may already be gone.
fn remove_file(file: &Path) -> Result<()> {
    match fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_failed("removing", file, e)),
    }
}

/// The records describing a plan.
pub fn records(plan: &Plan, dry_run: bool) -> Vec<PruneRecord> {
    let mut records = Vec::new();
    for (listed, live_until) in &plan.releases {
        records.push(PruneRecord::Release {
            id: listed.id.clone(),
            live_until: live_until.map(time::rfc3339),
            created: listed
                .meta
                .as_ref()
                .map(|m| m.created.clone())
                .unwrap_or_default(),
            dry_run,
        });
    }
    for (path, bytes) in &plan.files {
        records.push(PruneRecord::File {
            path: path.clone(),
            bytes: *bytes,
            dry_run,
        });
    }
    records.push(PruneRecord::Summary {
        kept: plan.kept.clone(),
        releases: plan.releases.len() as u64,
        files: plan.files.len() as u64,
        bytes: plan.files.iter().map(|(_, b)| b).sum(),
        objects: plan.objects.len() as u64,
        object_bytes: plan.objects.iter().map(|(_, b)| b).sum(),
        dry_run,
    });
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    fn release(id: &str, created_h: u64, live: bool, until_h: Option<u64>) -> Candidate {
        Candidate {
            id: id.into(),
            created_ms: created_h * H,
            live,
            live_until_ms: until_h.map(|h| h * H),
        }
    }

    #[test]
    fn deletes_only_outside_the_newest_n_and_old_enough() {
        let now = 100 * H;
        let releases = [
            release("a", 1, false, Some(10)), // stopped 90h ago
            release("b", 2, false, Some(99)), // published long ago, stopped 1h ago
            release("c", 3, false, None),     // never live, created 97h ago
            release("d", 4, true, None),      // live
            release("e", 5, false, None),     // newest, staged
        ];
        let verdicts = decide(&releases, 1, Duration::from_secs(2 * 3600), now);
        assert_eq!(
            verdicts,
            [
                Verdict::Delete,
                Verdict::Young,
                Verdict::Delete,
                Verdict::Live,
                Verdict::Recent
            ]
        );
        // A longer minimum age keeps everything.
        let verdicts = decide(&releases, 0, Duration::from_secs(200 * 3600), now);
        assert!(!verdicts.contains(&Verdict::Delete));
        // --keep larger than the count keeps everything.
        assert!(!decide(&releases, 10, Duration::ZERO, now).contains(&Verdict::Delete));
    }

    #[test]
    fn the_live_release_is_never_deleted() {
        let releases = [
            release("old-live", 0, true, None),
            release("x", 1, false, None),
        ];
        assert_eq!(
            decide(&releases, 0, Duration::ZERO, 1000 * H),
            [Verdict::Live, Verdict::Delete]
        );
    }

    #[test]
    fn periods_come_from_the_history() {
        let history = [
            Activation::new("a".into(), 10),
            Activation::new("b".into(), 20),
            Activation::new("a".into(), 30),
            Activation::new("b".into(), 40),
        ];
        assert_eq!(
            periods(&history, "a", Some("b")),
            [(10, Some(20)), (30, Some(40))]
        );
        assert_eq!(
            periods(&history, "b", Some("b")),
            [(20, Some(30)), (40, None)]
        );
        assert_eq!(periods(&history, "c", Some("b")), []);
    }
}
