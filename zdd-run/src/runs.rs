//! Run folders: one per deploy, holding each step's records.
//!
//! `begin` makes the folder (mode 0700: a step's stderr can carry an app's
//! crash log, and a crash log can carry secrets) and writes `run.json`:
//! which service, from which context and folder, by whom, since when.
//! zdd-deploy appends two lines per step to `steps.jsonl` (when it begins:
//! its name and output file; when it ends: its exit code and seconds) and
//! keeps each step's output as `NN-name.jsonl`. `finish`
//! turns these into `summary.json` with serde, so no value is ever pasted
//! into JSON unescaped. A folder without `summary.json` is a run that never
//! finished: a killed deploy, which the next deploy of the service undoes
//! first ([`unfinished`]).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zdd_core::cli::Progress;
use zdd_core::record::Role;
use zdd_core::{jsonl, time, Error, Result};

use crate::state::{self, file_safe};
use crate::ServiceArgs;

/// What a run is, written when it begins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The folder's name; also the `zdd.run` label of its replicas.
    pub run: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The build context (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The working directory the deploy started from.
    pub cwd: String,
    pub user: String,
    pub host: String,
    /// The deploy's process.
    pub pid: u32,
    pub started: String,
    pub started_ms: u64,
}

/// A step that ended: a line of `steps.jsonl` with its exit code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRun {
    pub step: String,
    pub exit: i32,
    pub seconds: f64,
}

/// A line of `steps.jsonl`, as zdd-deploy writes them: one when a step
/// begins (with the file its records go to), one when it ends (with its
/// exit code and time).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StepLine {
    pub step: String,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub exit: Option<i32>,
    #[serde(default)]
    pub seconds: Option<f64>,
}

/// Every line of a run's `steps.jsonl` (lines that do not parse, e.g. one
/// cut short by a kill, are left out).
pub fn step_lines(dir: &Path) -> Vec<StepLine> {
    fs::read_to_string(dir.join("steps.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The steps of `lines` that ended, in order.
pub fn ended_steps(lines: Vec<StepLine>) -> Vec<StepRun> {
    lines
        .into_iter()
        .filter_map(|line| {
            Some(StepRun {
                exit: line.exit?,
                seconds: line.seconds.unwrap_or_default(),
                step: line.step,
            })
        })
        .collect()
}

/// `summary.json`: how a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(flatten)]
    pub info: RunInfo,
    /// `deployed`, `rolled-back`, `rollback-failed`, `failed`,
    /// `interrupted`, `killed`.
    pub result: String,
    pub failed_step: Option<String>,
    /// `INT` or `TERM` when a signal ended the run.
    pub signal: Option<String>,
    /// The release that served before (the old replicas'), if any.
    pub from_release: Option<String>,
    /// The release being deployed.
    pub to_release: Option<String>,
    pub finished: String,
    pub seconds: f64,
    pub steps: Vec<StepRun>,
}

/// `zdd-run begin`.
#[derive(Debug, Clone, clap::Args)]
pub struct BeginArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Where run folders go (default: STATE/runs).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// The build context being deployed.
    #[arg(long)]
    pub context: Option<PathBuf>,
    /// The deploy's process (zdd-deploy's `$$`).
    #[arg(long)]
    pub pid: u32,
}

/// `zdd-run finish`.
#[derive(Debug, Clone, clap::Args)]
pub struct FinishArgs {
    /// The run folder.
    pub run: PathBuf,
    /// How the run ended.
    #[arg(long, value_parser = ["deployed", "rolled-back", "rollback-failed", "failed", "interrupted", "killed"])]
    pub result: String,
    /// The step that failed.
    #[arg(long)]
    pub failed_step: Option<String>,
    /// The signal that ended the run (INT, TERM).
    #[arg(long)]
    pub signal: Option<String>,
}

/// `zdd-run unfinished`.
#[derive(Debug, Clone, clap::Args)]
pub struct UnfinishedArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Where run folders are (default: STATE/runs).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Leave out this run folder (the caller's own).
    #[arg(long)]
    pub except: Option<PathBuf>,
}

/// The runs folder: the one given, else STATE/runs.
pub fn runs_dir(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(dir) => Ok(dir.to_path_buf()),
        None => Ok(state::state_dir()?.join("runs")),
    }
}

/// Creates the run folder and its `run.json`; returns the folder.
pub fn begin(args: &BeginArgs) -> Result<PathBuf> {
    let runs = runs_dir(args.runs_dir.as_deref())?;
    state::private_dir(&runs)?;
    let now = time::now_ms();
    let name = format!(
        "{}-{}-{}",
        file_safe(&args.service.service),
        time::compact(now),
        args.pid
    );
    let dir = runs.join(&name);
    state::private_dir(&dir)?;
    let context = args.context.as_ref().map(|c| {
        fs::canonicalize(c)
            .unwrap_or_else(|_| c.clone())
            .display()
            .to_string()
    });
    let info = RunInfo {
        run: name,
        service: args.service.service.clone(),
        project: args.service.project.clone(),
        context,
        cwd: std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        user: time::user(),
        host: time::host(),
        pid: args.pid,
        started: time::rfc3339(now),
        started_ms: now,
    };
    write_json(&dir.join("run.json"), &info)?;
    Ok(dir)
}

/// Reads a run folder's `run.json`.
pub fn info(dir: &Path) -> Result<RunInfo> {
    let path = dir.join("run.json");
    let text = fs::read_to_string(&path)
        .map_err(|e| Error::Usage(format!("{} is not a run folder: {e}", dir.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::input(format!("{}: {e}", path.display())))
}

/// Writes `summary.json` and says how the run ended.
pub fn finish(args: &FinishArgs, progress: Progress) -> Result<Summary> {
    let info = info(&args.run)?;
    let steps = ended_steps(step_lines(&args.run));
    let now = time::now_ms();
    let summary = Summary {
        result: args.result.clone(),
        failed_step: args.failed_step.clone(),
        signal: args.signal.clone(),
        from_release: from_release(&args.run),
        to_release: to_release(&args.run),
        finished: time::rfc3339(now),
        seconds: now.saturating_sub(info.started_ms) as f64 / 1000.0,
        steps,
        info,
    };
    write_json(&args.run.join("summary.json"), &summary)?;
    progress.info(describe(&summary, &args.run));
    Ok(summary)
}

/// `deployed api release 1a2b… (was 9f8e…) in 5.213s; records in DIR`.
pub fn describe(summary: &Summary, dir: &Path) -> String {
    let release = summary.to_release.as_deref().unwrap_or("(not built)");
    let was = summary
        .from_release
        .as_deref()
        .map(|r| format!(" (was {r})"))
        .unwrap_or_default();
    let why = match (&summary.signal, &summary.failed_step) {
        (Some(signal), Some(step)) => format!(", SIG{signal} during {step}"),
        (None, Some(step)) => format!(", the {step} step failed"),
        (Some(signal), None) => format!(", SIG{signal}"),
        (None, None) => String::new(),
    };
    format!(
        "{} {} release {release}{was}{why}, in {:.3}s; records in {}",
        summary.result,
        summary.info.service,
        summary.seconds,
        dir.display()
    )
}

/// A run folder of a service, read.
#[derive(Debug, Clone)]
pub struct RunFolder {
    pub dir: PathBuf,
    pub info: RunInfo,
    /// Whether it has a `summary.json`: a run without one never finished.
    pub finished: bool,
    /// `summary.json`, when it parses.
    pub summary: Option<Summary>,
}

/// The run folders of `service` in `runs`, oldest first; none when the
/// folder does not exist. Folders that are not runs are left out.
pub fn of_service(runs: &Path, service: &ServiceArgs) -> Vec<RunFolder> {
    let Ok(entries) = fs::read_dir(runs) else {
        return Vec::new();
    };
    let mut found: Vec<RunFolder> = entries
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            let info = info(&dir).ok()?;
            (info.service == service.service && info.project == service.project).then(|| {
                let text = fs::read_to_string(dir.join("summary.json"));
                RunFolder {
                    finished: text.is_ok(),
                    summary: text.ok().and_then(|t| serde_json::from_str(&t).ok()),
                    info,
                    dir,
                }
            })
        })
        .collect();
    found.sort_by(|a, b| (a.info.started_ms, &a.info.run).cmp(&(b.info.started_ms, &b.info.run)));
    found
}

/// The run folders of the service that have no `summary.json`, oldest first.
pub fn unfinished(args: &UnfinishedArgs) -> Result<Vec<PathBuf>> {
    let runs = runs_dir(args.runs_dir.as_deref())?;
    let except = args.except.as_ref().and_then(|e| fs::canonicalize(e).ok());
    Ok(of_service(&runs, &args.service)
        .into_iter()
        .filter(|run| !run.finished)
        .filter(|run| except.is_none() || fs::canonicalize(&run.dir).ok() != except)
        .map(|run| run.dir)
        .collect())
}

/// The records of a step's output file, if it is complete.
pub fn complete_records(path: &Path) -> Option<Vec<jsonl::Record>> {
    let file = fs::File::open(path).ok()?;
    let records = jsonl::read_records(file).ok()?;
    (!records.is_empty()).then_some(records)
}

/// The release of the image record (`01-image.jsonl`).
pub fn to_release(dir: &Path) -> Option<String> {
    complete_records(&dir.join("01-image.jsonl"))?
        .iter()
        .find(|r| r.is_image())
        .and_then(|r| r.image().ok())
        .map(|image| image.release)
}

/// A number of the `batch` record in `file` (zdd-scale --batch).
pub fn batch_field(file: &Path, field: &str) -> Result<u64> {
    complete_records(file)
        .unwrap_or_default()
        .iter()
        .find(|r| r.kind() == "batch")
        .and_then(|r| r.object.get(field))
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            Error::input(format!(
                "{}: no `batch` record with `{field}` (from zdd-scale --batch)",
                file.display()
            ))
        })
}

/// The release the running old replicas had when zdd-scale listed them.
pub fn from_release(dir: &Path) -> Option<String> {
    let records = complete_records(&dir.join("02-scaled.jsonl"))?;
    let containers = jsonl::containers(&records).ok()?;
    let mut fallback = None;
    for (_, c) in containers {
        match c.role {
            Some(Role::Old) if c.state.as_deref() == Some("running") => return c.release,
            // A rerun of the serving release: what served was this release.
            Some(Role::New) if c.started == Some(false) => fallback = c.release,
            _ => {}
        }
    }
    fallback
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).expect("run records serialize");
    text.push('\n');
    let temporary = path.with_extension("json.tmp");
    fs::write(&temporary, text)
        .and_then(|()| fs::rename(&temporary, path))
        .map_err(|e| Error::Failed(format!("writing {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("zdd-run-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn begin_in(runs: &Path, service: &str, pid: u32) -> PathBuf {
        begin(&BeginArgs {
            service: ServiceArgs {
                service: service.into(),
                project: None,
            },
            runs_dir: Some(runs.to_path_buf()),
            context: Some(".".into()),
            pid,
        })
        .unwrap()
    }

    #[test]
    fn a_run_folder_is_private_and_says_who_and_where() {
        let runs = scratch("begin");
        let dir = begin_in(&runs, "api/x", 42);
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(
            fs::metadata(&runs).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let info = info(&dir).unwrap();
        assert_eq!(info.service, "api/x");
        assert!(
            info.run.starts_with("api_x-") && info.run.ends_with("-42"),
            "{}",
            info.run
        );
        assert_eq!(dir.file_name().unwrap().to_str().unwrap(), info.run);
        assert!(info.context.as_deref().unwrap().starts_with('/'));
        fs::remove_dir_all(&runs).unwrap();
    }

    #[test]
    fn the_summary_escapes_what_it_is_given() {
        let runs = scratch("finish");
        let dir = begin_in(&runs, "api\"\\\n", 7);
        fs::write(
            dir.join("steps.jsonl"),
            concat!(
                "{\"step\":\"build\",\"output\":\"01-image.jsonl\"}\n",
                "{\"step\":\"build\",\"exit\":0,\"seconds\":1.5}\n",
                "{\"step\":\"scale\",\"output\":\"02-scaled.jsonl\"}\n",
                "{\"step\":\"scale\",\"exit\":1,\"seconds\":0.25}\n",
                "{\"step\":\"hea"
            ),
        )
        .unwrap();
        fs::write(
            dir.join("01-image.jsonl"),
            "{\"type\":\"image\",\"image\":\"a:1\",\"image_id\":\"sha256:x\",\"release\":\"r\\\"2\"}\n",
        )
        .unwrap();
        let summary = finish(
            &FinishArgs {
                run: dir.clone(),
                result: "rolled-back".into(),
                failed_step: Some("scale".into()),
                signal: None,
            },
            Progress::new("test", true),
        )
        .unwrap();
        let text = fs::read_to_string(dir.join("summary.json")).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["service"], "api\"\\\n");
        assert_eq!(parsed["to_release"], "r\"2");
        assert_eq!(parsed["result"], "rolled-back");
        assert_eq!(parsed["steps"][1]["step"], "scale");
        assert_eq!(
            parsed["steps"].as_array().unwrap().len(),
            2,
            "ended steps only"
        );
        assert_eq!(parsed, serde_json::to_value(&summary).unwrap());
        fs::remove_dir_all(&runs).unwrap();
    }

    #[test]
    fn unfinished_runs_are_those_without_a_summary_of_this_service() {
        let runs = scratch("unfinished");
        let killed = begin_in(&runs, "api", 1);
        let finished = begin_in(&runs, "api", 2);
        fs::write(finished.join("summary.json"), "{}").unwrap();
        let other = begin_in(&runs, "web", 3);
        let current = begin_in(&runs, "api", 4);
        let found = unfinished(&UnfinishedArgs {
            service: ServiceArgs {
                service: "api".into(),
                project: None,
            },
            runs_dir: Some(runs.clone()),
            except: Some(current.clone()),
        })
        .unwrap();
        assert_eq!(found, [killed]);
        let _ = other;
        // No runs folder yet: none.
        let none = unfinished(&UnfinishedArgs {
            service: ServiceArgs {
                service: "api".into(),
                project: None,
            },
            runs_dir: Some(runs.join("absent")),
            except: None,
        })
        .unwrap();
        assert!(none.is_empty());
        fs::remove_dir_all(&runs).unwrap();
    }
}
