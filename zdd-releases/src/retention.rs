//! What `zdd-releases prune` may remove: the one rule for how long a
//! release's image and a run's folder are kept.
//!
//! Images: the newest N releases (by when each was last deployed, else
//! built) are kept, and never the serving one, the one before it (where
//! `--rollback` goes), nor one any container on the engine was created
//! from. Run folders, like zdd-assets' releases: one goes only when it is
//! outside the newest N **and** ended more than the minimum age ago; never
//! an unfinished one (the next deploy undoes it from there), the one that
//! says where the serving release came from, nor the last deploy of a
//! release whose image is kept.

use std::collections::HashSet;
use std::time::Duration;

use zdd_run::runs::RunFolder;

use crate::catalog::Release;

/// The releases whose images go: present, outside the newest `keep`,
/// neither serving nor previous, and used by no container.
pub fn images_to_prune<'a>(
    releases: &'a [Release],
    keep: usize,
    in_use: &HashSet<String>,
) -> Vec<&'a Release> {
    let present: Vec<&Release> = releases.iter().filter(|r| r.present).collect();
    let newest = present.len().saturating_sub(keep);
    present
        .into_iter()
        .enumerate()
        .filter(|(index, release)| {
            let used = release
                .image_id
                .as_ref()
                .is_some_and(|id| in_use.contains(id));
            *index < newest && !release.serving && !release.previous && !used
        })
        .map(|(_, release)| release)
        .collect()
}

/// The run folders that go, from `folders` oldest first.
pub fn runs_to_prune<'a>(
    folders: &'a [RunFolder],
    keep: usize,
    min_age: Duration,
    now_ms: u64,
    protected: &HashSet<String>,
) -> Vec<&'a RunFolder> {
    let newest = folders.len().saturating_sub(keep);
    folders
        .iter()
        .take(newest)
        .filter(|folder| {
            let ended_ms = folder.info.started_ms
                + folder
                    .summary
                    .as_ref()
                    .map_or(0, |s| (s.seconds * 1000.0) as u64);
            let old = now_ms.saturating_sub(ended_ms) >= min_age.as_millis() as u64;
            folder.finished && old && !protected.contains(&folder.info.run)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use zdd_run::runs::{RunInfo, Summary};

    fn release(name: &str, serving: bool, previous: bool, present: bool) -> Release {
        Release {
            service: "api".into(),
            project: None,
            release: name.into(),
            image: format!("api:{name}"),
            image_id: Some(format!("sha256:{name}")),
            present,
            built: None,
            last_deployed: None,
            last_run: None,
            deploys: 0,
            replicas: 0,
            serving,
            previous,
            context_hash: None,
            recency_ms: 0,
        }
    }

    fn names(releases: Vec<&Release>) -> Vec<&str> {
        releases.iter().map(|r| r.release.as_str()).collect()
    }

    #[test]
    fn the_newest_n_the_serving_the_previous_and_used_images_stay() {
        // Oldest first; v2 serves after a rollback, v4 is the previous one.
        let releases = vec![
            release("v0", false, false, false),
            release("v1", false, false, true),
            release("v2", true, false, true),
            release("v3", false, false, true),
            release("v4", false, true, true),
            release("v5", false, false, true),
        ];
        let none = HashSet::new();
        assert_eq!(
            names(images_to_prune(&releases, 2, &none)),
            ["v1", "v3"],
            "v4 and v5 are the newest two; v2 serves; v0 has no image"
        );
        assert_eq!(
            names(images_to_prune(&releases, 0, &none)),
            ["v1", "v3", "v5"]
        );
        let used = HashSet::from(["sha256:v1".to_owned()]);
        assert_eq!(names(images_to_prune(&releases, 2, &used)), ["v3"]);
        assert!(images_to_prune(&releases, 5, &none).is_empty());
    }

    fn folder(run: &str, started_ms: u64, finished: bool) -> RunFolder {
        let info = RunInfo {
            run: run.into(),
            service: "api".into(),
            project: None,
            context: None,
            cwd: "/".into(),
            user: "u".into(),
            host: "h".into(),
            pid: 1,
            started: String::new(),
            started_ms,
        };
        RunFolder {
            dir: PathBuf::from(run),
            summary: finished.then(|| Summary {
                info: info.clone(),
                result: "deployed".into(),
                failed_step: None,
                signal: None,
                from_release: None,
                to_release: None,
                finished: String::new(),
                seconds: 1.0,
                steps: Vec::new(),
            }),
            finished,
            info,
        }
    }

    #[test]
    fn a_run_goes_only_outside_the_newest_n_and_past_the_age() {
        const DAY: u64 = 86_400_000;
        let folders = vec![
            folder("old", 0, true),
            folder("killed", DAY, false),
            folder("protected", 2 * DAY, true),
            folder("recent", 9 * DAY, true),
            folder("newest", 10 * DAY, true),
        ];
        let protected = HashSet::from(["protected".to_owned()]);
        let week = Duration::from_secs(7 * 86_400);
        let gone: Vec<&str> = runs_to_prune(&folders, 1, week, 10 * DAY, &protected)
            .iter()
            .map(|f| f.info.run.as_str())
            .collect();
        assert_eq!(gone, ["old"], "recent is younger than a week");
        assert!(runs_to_prune(&folders, 5, Duration::ZERO, 10 * DAY, &protected).is_empty());
    }
}
