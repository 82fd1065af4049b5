//! Which records a rollback starts from.
//!
//! A rollback undoes what its run started, so it needs the run's own
//! account of the service: the newest step output of the run folder that
//! is complete (a killed step leaves its output cut short; the one before
//! it is the truth). A step killed before it wrote anything may still have
//! started replicas: zdd-scale labels each one `zdd.run=RUN` as it creates
//! it, so the engine is asked for them too, and those the records miss are
//! added as new replicas the run started.
//!
//! And whether there is anything to go back to. The switch is done, and
//! the new release is the one serving, once zdd-deploy's destructive step
//! (`retire`, by its name in `steps.jsonl`) has begun and did not write
//! its records whole (it may have stopped old replicas: an old replica in
//! its shutdown delay still looks running, and restoring it would route
//! to a replica about to exit), or its records say an old replica was
//! retired, or the new replicas were proven and an old one that ran is
//! gone or stopped on the engine. Then the records are written and the
//! answer is exit 1: do not roll back.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use bollard::models::ContainerStateStatusEnum;
use zdd_core::cli::{Outcome, Progress};
use zdd_core::docker::{self, Docker};
use zdd_core::evidence::{self, Routing};
use zdd_core::jsonl::{self, Record, RecordWriter};
use zdd_core::record::{ContainerRecord, Role};
use zdd_core::service::Service;
use zdd_core::{labels, Error, Result};

use crate::runs::{self, complete_records};

/// `zdd-run rollback-records RUN`.
pub async fn write_records(dir: &Path, progress: Progress) -> Result<Outcome> {
    let info = runs::info(dir)?;
    let (source, records) = match newest_complete_output(dir) {
        Some((path, records)) => (Some(path), records),
        None => (None, Vec::new()),
    };
    let docker = docker::connect().await?;
    let service = Service::new(&info.service, info.project.clone());
    let containers = jsonl::containers(&records)?;
    let unrecorded = unrecorded_replicas(&docker, &service, &info.run, &containers).await?;

    let has_containers = !containers.is_empty() || !unrecorded.is_empty();
    if !has_containers {
        progress.info(format_args!(
            "run {}: it started no container; nothing to roll back",
            info.run
        ));
        return Ok(Outcome::Success);
    }
    if let Some(path) = &source {
        progress.info(format_args!(
            "run {}: rolling back from {}",
            info.run,
            path.display()
        ));
    }
    for record in &unrecorded {
        progress.info(format_args!(
            "run {}: {} was started but never written down (its step was killed); rolling it back too",
            info.run,
            record.label()
        ));
    }

    let all: Vec<&ContainerRecord> = containers
        .iter()
        .map(|(_, c)| c)
        .chain(unrecorded.iter())
        .collect();
    let switched = match retire_cut_short(dir) {
        Some(why) => Some(why),
        None => switch_done(&docker, &all).await?,
    };

    let mut out = RecordWriter::stdout();
    for record in &records {
        out.pass(record)?;
    }
    for record in &unrecorded {
        out.container(record)?;
    }
    match switched {
        None => Ok(Outcome::Success),
        Some(why) => {
            progress.error(format_args!(
                "run {}: not rolling back: {why}; the new release serves",
                info.run
            ));
            Ok(Outcome::StepFailed)
        }
    }
}

/// zdd-deploy's step that removes old replicas.
pub const DESTRUCTIVE_STEP: &str = "retire";

/// Why the run's destructive step may have removed old replicas without
/// saying so: it began and its output is not whole.
fn retire_cut_short(dir: &Path) -> Option<String> {
    // The last one to begin: with batches there is one per batch.
    let began = runs::step_lines(dir)
        .into_iter()
        .filter(|line| line.step == DESTRUCTIVE_STEP)
        .filter_map(|line| line.output)
        .next_back()?;
    match complete_records(&dir.join(&began)) {
        Some(_) => None,
        None => Some(format!(
            "the {DESTRUCTIVE_STEP} step began and was cut short (no whole {began}); it may have stopped old replicas"
        )),
    }
}

/// The newest step output of the run folder whose records are whole: in
/// the order the steps began (`steps.jsonl`), so the second batch's
/// `b2-02-scaled.jsonl` is newer than the first batch's
/// `07-forgotten.jsonl`. The rollback's own outputs (`r1-…`, `rb-…`) are
/// never the start of a rollback. A folder whose `steps.jsonl` names no
/// output is read by its file names (`01-image.jsonl` … `99-x.jsonl`).
pub fn newest_complete_output(dir: &Path) -> Option<(PathBuf, Vec<Record>)> {
    let mut outputs: Vec<PathBuf> = runs::step_lines(dir)
        .into_iter()
        .filter_map(|line| line.output)
        .filter(|name| !name.starts_with('r'))
        .map(|name| dir.join(name))
        .collect();
    if outputs.is_empty() {
        outputs = fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_numbered_output(p))
            .collect();
        outputs.sort();
    }
    outputs
        .into_iter()
        .rev()
        .find_map(|path| complete_records(&path).map(|records| (path, records)))
}

/// `01-image.jsonl` … `99-x.jsonl`.
fn is_numbered_output(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let bytes = name.as_bytes();
    name.ends_with(".jsonl")
        && bytes.len() > 3
        && bytes[0].is_ascii_digit()
        && bytes[1].is_ascii_digit()
        && bytes[2] == b'-'
}

/// The service's containers labelled with the run that `records` do not
/// list, as new replicas the run started.
async fn unrecorded_replicas(
    docker: &Docker,
    service: &Service,
    run: &str,
    recorded: &[(usize, ContainerRecord)],
) -> Result<Vec<ContainerRecord>> {
    let known: HashSet<&str> = recorded.iter().map(|(_, c)| c.id.as_str()).collect();
    let listed = docker::containers_labelled(docker, labels::RUN, run, true).await?;
    let mut found = Vec::new();
    for summary in listed {
        let owned = summary.labels.as_ref().is_some_and(|l| service.owns(l));
        let Some(id) = summary
            .id
            .filter(|id| owned && !known.contains(id.as_str()))
        else {
            continue;
        };
        let inspect = match docker.inspect_container(&id, None).await {
            Ok(inspect) => inspect,
            Err(e) if docker::is_not_found(&e) => continue,
            Err(e) => return Err(Error::docker(format!("inspecting container {id}"), e)),
        };
        let mut record = docker::container_record(&inspect, &service.name);
        record.role = Some(Role::New);
        record.started = Some(true);
        found.push(record);
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Why the switch is done (nothing to go back to), if it is.
async fn switch_done(docker: &Docker, containers: &[&ContainerRecord]) -> Result<Option<String>> {
    let old: Vec<&&ContainerRecord> = containers
        .iter()
        .filter(|c| c.role == Some(Role::Old))
        .collect();
    if let Some(retired) = old.iter().find(|c| c.retired == Some(true)) {
        return Ok(Some(format!(
            "old container {} was already retired",
            retired.label()
        )));
    }
    // Only a proven new release lets zdd-retire run; without that proof an
    // old replica that stopped did so on its own, and the rollback goes on.
    if evidence::old_release_may_go(containers.iter().copied(), Routing::AsRecorded).is_err() {
        return Ok(None);
    }
    for record in old.iter().filter(|c| c.state.as_deref() == Some("running")) {
        let running = match docker.inspect_container(&record.id, None).await {
            Ok(inspect) => inspect
                .state
                .and_then(|s| s.status)
                .is_some_and(|s| s == ContainerStateStatusEnum::RUNNING),
            Err(e) if docker::is_not_found(&e) => false,
            Err(e) => return Err(Error::docker(format!("inspecting {}", record.label()), e)),
        };
        if !running {
            return Ok(Some(format!(
                "old container {} no longer runs (the retire step had begun)",
                record.label()
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zdd-run-rb-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    const IMAGE: &str =
        "{\"type\":\"image\",\"image\":\"a:1\",\"image_id\":\"sha256:x\",\"release\":\"1\"}\n";

    #[test]
    fn the_newest_complete_step_output_is_the_truth() {
        let dir = scratch("newest");
        fs::write(dir.join("01-image.jsonl"), IMAGE).unwrap();
        let scaled = format!(
            "{IMAGE}{}\n",
            r#"{"type":"container","id":"c1","service":"api","role":"new","started":true}"#
        );
        fs::write(dir.join("02-scaled.jsonl"), &scaled).unwrap();
        // The health step was killed mid-line, the route step wrote nothing.
        fs::write(
            dir.join("03-health.jsonl"),
            format!("{IMAGE}{{\"type\":\"container\",\"id\":\"c1"),
        )
        .unwrap();
        fs::write(dir.join("04-routed.jsonl"), "").unwrap();
        // The rollback's own outputs are never the start of a rollback.
        fs::write(dir.join("r1-restored.jsonl"), IMAGE).unwrap();
        fs::write(dir.join("steps.jsonl"), "{}\n").unwrap();
        let (path, records) = newest_complete_output(&dir).unwrap();
        assert_eq!(path, dir.join("02-scaled.jsonl"));
        assert_eq!(records.len(), 2);

        // With steps.jsonl, the order the steps began decides: a second
        // batch's scale is newer than the first batch's last step.
        fs::write(dir.join("07-forgotten.jsonl"), &scaled).unwrap();
        fs::write(dir.join("b2-02-scaled.jsonl"), IMAGE).unwrap();
        let began = |out: &str| format!("{{\"step\":\"x\",\"output\":\"{out}\"}}\n");
        let steps: String = [
            "02-scaled.jsonl",
            "07-forgotten.jsonl",
            "b2-02-scaled.jsonl",
            "r1-restored.jsonl",
        ]
        .iter()
        .map(|o| began(o))
        .collect();
        fs::write(dir.join("steps.jsonl"), steps).unwrap();
        let (path, _) = newest_complete_output(&dir).unwrap();
        assert_eq!(path, dir.join("b2-02-scaled.jsonl"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_retire_step_cut_short_means_the_switch_may_be_done() {
        let dir = scratch("retire");
        let began = "{\"step\":\"retire\",\"output\":\"06-retired.jsonl\"}\n";
        fs::write(dir.join("steps.jsonl"), began).unwrap();
        fs::write(dir.join("06-retired.jsonl"), "").unwrap();
        let why = retire_cut_short(&dir).unwrap();
        assert!(why.contains("cut short"), "{why}");
        // Whole records (a refusal, or the retired flags) speak for themselves.
        fs::write(dir.join("06-retired.jsonl"), IMAGE).unwrap();
        assert!(retire_cut_short(&dir).is_none());
        // A run that never reached the retire step.
        fs::write(
            dir.join("steps.jsonl"),
            "{\"step\":\"health\",\"output\":\"03-health.jsonl\"}\n",
        )
        .unwrap();
        fs::remove_file(dir.join("06-retired.jsonl")).unwrap();
        assert!(retire_cut_short(&dir).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_that_wrote_nothing_has_no_records() {
        let dir = scratch("empty");
        fs::write(dir.join("01-image.jsonl"), "").unwrap();
        assert!(newest_complete_output(&dir).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
