//! Which releases a service has, and which of them serves and served
//! before: the one place those two questions are answered.
//!
//! A release is an image zdd-build tagged `REPO:RELEASE`. What zdd knows
//! of it comes from three places, each the authority for one thing: the
//! engine's images (is the image still there, when was it built), the run
//! folders (when was it deployed, by which run, and from which release),
//! and the running replicas (what serves now). [`assemble`] joins them
//! without touching the engine, so the rules are tested on their own.

use std::collections::BTreeMap;

use serde::Serialize;
use zdd_core::time;
use zdd_run::runs::RunFolder;

/// The record type of one release.
pub const RELEASE: &str = "release";

/// An image the engine holds for the service.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldImage {
    pub release: String,
    /// `REPO:RELEASE`.
    pub image: String,
    pub image_id: String,
    pub context_hash: Option<String>,
    pub created_ms: Option<u64>,
}

/// What a run folder says about a release.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub run: String,
    pub result: String,
    pub from_release: Option<String>,
    pub to_release: String,
    /// The image record's reference and id.
    pub image: Option<String>,
    pub image_id: Option<String>,
    pub finished_ms: u64,
}

impl Attempt {
    /// The attempt a finished run folder records, if it got as far as an
    /// image.
    pub fn of(folder: &RunFolder) -> Option<Attempt> {
        let summary = folder.summary.as_ref()?;
        let to_release = summary.to_release.clone()?;
        let image = zdd_run::runs::complete_records(&folder.dir.join("01-image.jsonl"))
            .and_then(|records| records.iter().find_map(|r| r.image().ok()));
        Some(Attempt {
            run: folder.info.run.clone(),
            result: summary.result.clone(),
            from_release: summary.from_release.clone(),
            to_release,
            image: image.as_ref().map(|i| i.image.clone()),
            image_id: image.map(|i| i.image_id),
            finished_ms: folder.info.started_ms + (summary.seconds * 1000.0) as u64,
        })
    }

    fn deployed(&self) -> bool {
        self.result == "deployed"
    }
}

/// One release of a service: a `release` record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Release {
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub release: String,
    pub image: String,
    pub image_id: Option<String>,
    /// Whether the engine still holds the image (a pruned release is
    /// listed from its run folders, and cannot be deployed again).
    pub present: bool,
    /// When the image was built.
    pub built: Option<String>,
    /// When a deploy of it last succeeded, and that run.
    pub last_deployed: Option<String>,
    pub last_run: Option<String>,
    /// How many deploys of it succeeded.
    pub deploys: usize,
    /// Running replicas of it now.
    pub replicas: usize,
    /// The release the service is on: what serves now.
    pub serving: bool,
    /// The release that served before the serving one: where
    /// `zdd-deploy --rollback` goes.
    pub previous: bool,
    #[serde(skip)]
    pub context_hash: Option<String>,
    /// When it was last deployed, else built: the order of the list and
    /// of retention.
    #[serde(skip)]
    pub recency_ms: u64,
}

/// The release the service is on, the one before it, and the run that
/// says so.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lineage {
    pub current: Option<String>,
    pub previous: Option<String>,
    /// The deploy to `current` that came from `previous`: retention keeps
    /// its run folder, or `--rollback` would lose its way back.
    pub via_run: Option<String>,
}

/// The release the service is on and the one before it.
///
/// Current: the newest successful deploy whose release has running
/// replicas; else, with replicas of one release only, that release.
/// Previous: the release the newest successful deploy *to* the current
/// one came from (skipping re-runs of the same release). So a rollback
/// from v3 to v2 makes v3 the previous one, and `--rollback` twice goes
/// back and forth, as `kubectl rollout undo` does.
pub fn lineage(attempts: &[Attempt], replicas: &BTreeMap<String, usize>) -> Lineage {
    let deployed: Vec<&Attempt> = attempts.iter().filter(|a| a.deployed()).collect();
    let current = deployed
        .iter()
        .rev()
        .find(|a| replicas.contains_key(&a.to_release))
        .map(|a| a.to_release.clone())
        .or_else(|| {
            (replicas.len() == 1)
                .then(|| replicas.keys().next().cloned())
                .flatten()
        });
    let via = current.as_ref().and_then(|current| {
        deployed.iter().rev().find(|a| {
            &a.to_release == current && a.from_release.as_ref().is_some_and(|f| f != current)
        })
    });
    Lineage {
        previous: via.and_then(|a| a.from_release.clone()),
        via_run: via.map(|a| a.run.clone()),
        current,
    }
}

/// Joins the engine's images, the run folders' attempts (oldest first)
/// and the running replicas per release into the service's releases,
/// oldest first.
pub fn assemble(
    service: &str,
    project: Option<&str>,
    images: &[HeldImage],
    attempts: &[Attempt],
    replicas: &BTreeMap<String, usize>,
) -> Vec<Release> {
    let Lineage {
        current, previous, ..
    } = lineage(attempts, replicas);
    let mut releases: BTreeMap<String, Release> = BTreeMap::new();
    let blank = |release: &str, image: String| Release {
        service: service.to_owned(),
        project: project.map(str::to_owned),
        release: release.to_owned(),
        image,
        image_id: None,
        present: false,
        built: None,
        last_deployed: None,
        last_run: None,
        deploys: 0,
        replicas: 0,
        serving: false,
        previous: false,
        context_hash: None,
        recency_ms: 0,
    };
    for held in images {
        let entry = releases
            .entry(held.release.clone())
            .or_insert_with(|| blank(&held.release, held.image.clone()));
        entry.image = held.image.clone();
        entry.image_id = Some(held.image_id.clone());
        entry.present = true;
        entry.context_hash = held.context_hash.clone();
        entry.built = held.created_ms.map(time::rfc3339);
        entry.recency_ms = held.created_ms.unwrap_or_default();
    }
    for attempt in attempts {
        let image = attempt.image.clone().unwrap_or_default();
        let entry = releases
            .entry(attempt.to_release.clone())
            .or_insert_with(|| blank(&attempt.to_release, image));
        if entry.image_id.is_none() {
            entry.image_id = attempt.image_id.clone();
        }
        if attempt.deployed() {
            entry.deploys += 1;
            entry.last_deployed = Some(time::rfc3339(attempt.finished_ms));
            entry.last_run = Some(attempt.run.clone());
            entry.recency_ms = entry.recency_ms.max(attempt.finished_ms);
        }
    }
    for (release, count) in replicas {
        if let Some(entry) = releases.get_mut(release) {
            entry.replicas = *count;
        }
    }
    let mut list: Vec<Release> = releases.into_values().collect();
    for release in &mut list {
        release.serving = current.as_deref() == Some(release.release.as_str());
        release.previous = previous.as_deref() == Some(release.release.as_str());
    }
    list.sort_by(|a, b| (a.recency_ms, &a.release).cmp(&(b.recency_ms, &b.release)));
    list
}

/// The releases as a table for people, oldest first.
pub fn table(releases: &[Release]) -> String {
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            let state = match (r.serving, r.previous, r.present) {
                (true, _, _) => "serving",
                (_, true, _) => "previous",
                (_, _, false) => "image gone",
                _ => "-",
            };
            vec![
                r.release.clone(),
                state.to_owned(),
                r.replicas.to_string(),
                zdd_core::table::or_dash(r.built.as_deref()),
                zdd_core::table::or_dash(r.last_deployed.as_deref()),
                r.image.clone(),
            ]
        })
        .collect();
    zdd_core::table::render(
        &[
            "RELEASE",
            "STATE",
            "REPLICAS",
            "BUILT",
            "LAST DEPLOYED",
            "IMAGE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(run: &str, result: &str, from: Option<&str>, to: &str, at: u64) -> Attempt {
        Attempt {
            run: run.into(),
            result: result.into(),
            from_release: from.map(Into::into),
            to_release: to.into(),
            image: Some(format!("api:{to}")),
            image_id: Some(format!("sha256:{to}")),
            finished_ms: at,
        }
    }

    fn current_and_previous(
        attempts: &[Attempt],
        replicas: &BTreeMap<String, usize>,
    ) -> (Option<String>, Option<String>) {
        let lineage = lineage(attempts, replicas);
        (lineage.current, lineage.previous)
    }

    fn serving(release: &str, count: usize) -> BTreeMap<String, usize> {
        BTreeMap::from([(release.to_owned(), count)])
    }

    #[test]
    fn previous_is_where_the_serving_release_came_from_and_rollback_toggles() {
        let mut runs = vec![
            attempt("r1", "deployed", None, "v1", 1),
            attempt("r2", "deployed", Some("v1"), "v2", 2),
            attempt("r3", "deployed", Some("v2"), "v3", 3),
        ];
        assert_eq!(
            current_and_previous(&runs, &serving("v3", 2)),
            (Some("v3".into()), Some("v2".into()))
        );
        // A failed deploy of v4 and a re-run of v3 change nothing.
        runs.push(attempt("r4", "rolled-back", Some("v3"), "v4", 4));
        runs.push(attempt("r5", "deployed", Some("v3"), "v3", 5));
        assert_eq!(
            current_and_previous(&runs, &serving("v3", 2)),
            (Some("v3".into()), Some("v2".into()))
        );
        assert_eq!(
            lineage(&runs, &serving("v3", 2)).via_run.as_deref(),
            Some("r3"),
            "the deploy that came from v2, not the re-run"
        );
        // --rollback: v3 → v2; the previous one is now v3.
        runs.push(attempt("r6", "deployed", Some("v3"), "v2", 6));
        assert_eq!(
            current_and_previous(&runs, &serving("v2", 2)),
            (Some("v2".into()), Some("v3".into()))
        );
    }

    #[test]
    fn without_history_the_only_serving_release_is_current_with_no_previous() {
        assert_eq!(
            current_and_previous(&[], &serving("v1", 1)),
            (Some("v1".into()), None)
        );
        let two = BTreeMap::from([("a".to_owned(), 1), ("b".to_owned(), 1)]);
        assert_eq!(current_and_previous(&[], &two), (None, None));
    }

    #[test]
    fn releases_join_images_runs_and_replicas_oldest_first() {
        let images = vec![
            HeldImage {
                release: "v2".into(),
                image: "api:v2".into(),
                image_id: "sha256:2".into(),
                context_hash: None,
                created_ms: Some(20),
            },
            HeldImage {
                release: "built-only".into(),
                image: "api:built-only".into(),
                image_id: "sha256:b".into(),
                context_hash: None,
                created_ms: Some(25),
            },
        ];
        let runs = vec![
            attempt("r1", "deployed", None, "v1", 10),
            attempt("r2", "deployed", Some("v1"), "v2", 30),
        ];
        let list = assemble("api", None, &images, &runs, &serving("v2", 3));
        let names: Vec<&str> = list.iter().map(|r| r.release.as_str()).collect();
        assert_eq!(names, ["v1", "built-only", "v2"]);
        let v1 = &list[0];
        assert!(!v1.present && v1.previous && !v1.serving);
        assert_eq!(v1.last_run.as_deref(), Some("r1"));
        let v2 = &list[2];
        assert!(v2.present && v2.serving && v2.replicas == 3 && v2.deploys == 1);
        assert!(list[1].present && list[1].last_deployed.is_none());
    }
}
