//! `zdd-history`: every deploy of a service, from its run folders.
//!
//! The run folders are the history: zdd-deploy writes one per run, and
//! `summary.json` says how it ended. Nothing else is kept, so the history
//! cannot disagree with the records a rollback would start from. A run
//! without a summary is `running` while its deploy process lives, else
//! `unfinished` (killed; the next deploy undoes it and marks it `killed`).

use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;
use zdd_core::cli::{CommonArgs, Outcome};
use zdd_core::jsonl::RecordWriter;
use zdd_core::{table, Result};

use crate::runs::{self, RunFolder, StepRun};
use crate::ServiceArgs;

/// The record type of one deploy.
pub const DEPLOY: &str = "deploy";

/// Every deploy of a service, oldest first, from its run folders: when,
/// by whom, from which release to which, how it ended.
///
/// Output: one `deploy` record per run (JSON Lines), or a table with
/// --table. Run folders are in STATE/runs (STATE: $ZDD_STATE_DIR, else
/// /var/lib/zdd for root, else $XDG_STATE_HOME/zdd) unless --runs-dir
/// says otherwise.
#[derive(Debug, Parser)]
#[command(name = "zdd-history", version, after_help = EXIT_HELP)]
pub struct Args {
    /// The service.
    #[arg(value_name = "SERVICE")]
    pub service: String,
    /// The Compose project whose service it is.
    #[arg(long)]
    pub project: Option<String>,
    /// Where run folders are (default: STATE/runs).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// Only the newest N deploys.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// A table for people instead of JSON Lines.
    #[arg(long)]
    pub table: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

const EXIT_HELP: &str = "\
Exit codes:
  0  the history was written (also when there is none)
  2  usage error";

/// One deploy: a `deploy` record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deploy {
    pub run: String,
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// `deployed`, `rolled-back`, `rollback-failed`, `failed`,
    /// `interrupted`, `killed`; `running` or `unfinished` without a summary.
    pub result: String,
    pub failed_step: Option<String>,
    pub signal: Option<String>,
    pub from_release: Option<String>,
    pub to_release: Option<String>,
    /// `build` (from a build context) or `release` (an image zdd already
    /// held: `zdd-deploy --release` / `--rollback`).
    pub source: Option<String>,
    pub started: String,
    pub finished: Option<String>,
    pub seconds: Option<f64>,
    pub user: String,
    pub host: String,
    pub cwd: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub steps: Vec<StepRun>,
    /// The run folder.
    pub dir: String,
}

/// The deploy a run folder records.
pub fn deploy(folder: &RunFolder) -> Deploy {
    let info = &folder.info;
    let lines = runs::step_lines(&folder.dir);
    let source = lines
        .iter()
        .find(|line| line.step == "build" || line.step == "release")
        .map(|line| line.step.clone());
    let (result, failed_step, signal, finished, seconds, steps) = match &folder.summary {
        Some(s) => (
            s.result.clone(),
            s.failed_step.clone(),
            s.signal.clone(),
            Some(s.finished.clone()),
            Some(s.seconds),
            s.steps.clone(),
        ),
        None => {
            let state = if !folder.finished && crate::lock::process_alive(info.pid) {
                "running"
            } else {
                "unfinished"
            };
            (
                state.into(),
                None,
                None,
                None,
                None,
                runs::ended_steps(lines),
            )
        }
    };
    let (from_release, to_release) = match &folder.summary {
        Some(s) => (s.from_release.clone(), s.to_release.clone()),
        None => (
            runs::from_release(&folder.dir),
            runs::to_release(&folder.dir),
        ),
    };
    Deploy {
        run: info.run.clone(),
        service: info.service.clone(),
        project: info.project.clone(),
        result,
        failed_step,
        signal,
        from_release,
        to_release,
        source,
        started: info.started.clone(),
        finished,
        seconds,
        user: info.user.clone(),
        host: info.host.clone(),
        cwd: info.cwd.clone(),
        context: info.context.clone(),
        steps,
        dir: folder.dir.display().to_string(),
    }
}

/// The deploys as a table: started, result, from → to, how long, who.
pub fn table(deploys: &[Deploy]) -> String {
    let short = |release: &Option<String>| {
        table::or_dash(release.as_deref().map(|r| &r[..r.len().min(12)]))
    };
    let rows: Vec<Vec<String>> = deploys
        .iter()
        .map(|d| {
            let result = match &d.failed_step {
                Some(step) => format!("{} ({step})", d.result),
                None => d.result.clone(),
            };
            vec![
                d.started.clone(),
                result,
                format!("{} → {}", short(&d.from_release), short(&d.to_release)),
                table::or_dash(d.source.as_deref()),
                d.seconds.map_or("-".into(), |s| format!("{s:.1}s")),
                format!("{}@{}", d.user, d.host),
                d.run.clone(),
            ]
        })
        .collect();
    table::render(
        &[
            "STARTED",
            "RESULT",
            "FROM → TO",
            "SOURCE",
            "TOOK",
            "BY",
            "RUN",
        ],
        &rows,
    )
}

pub fn run(args: Args) -> Result<Outcome> {
    let runs = runs::runs_dir(args.runs_dir.as_deref())?;
    let service = ServiceArgs {
        service: args.service.clone(),
        project: args.project.clone(),
    };
    let mut deploys: Vec<Deploy> = runs::of_service(&runs, &service)
        .iter()
        .map(deploy)
        .collect();
    if let Some(last) = args.last {
        deploys.drain(..deploys.len().saturating_sub(last));
    }
    if args.table {
        use std::io::Write;
        std::io::stdout().write_all(table(&deploys).as_bytes())?;
        return Ok(Outcome::Success);
    }
    let mut out = RecordWriter::stdout();
    for deploy in &deploys {
        out.write(DEPLOY, deploy)?;
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::{begin, finish, BeginArgs, FinishArgs};
    use std::fs;
    use std::path::Path;
    use zdd_core::cli::Progress;

    fn start(runs: &Path, pid: u32, first_step: &str) -> PathBuf {
        // One run per millisecond at least, so they sort by time.
        std::thread::sleep(std::time::Duration::from_millis(3));
        let dir = begin(&BeginArgs {
            service: ServiceArgs {
                service: "api".into(),
                project: None,
            },
            runs_dir: Some(runs.to_path_buf()),
            context: None,
            pid,
        })
        .unwrap();
        fs::write(
            dir.join("steps.jsonl"),
            format!(
                "{{\"step\":\"{first_step}\",\"output\":\"01-image.jsonl\"}}\n{{\"step\":\"{first_step}\",\"exit\":0,\"seconds\":0.5}}\n"
            ),
        )
        .unwrap();
        fs::write(
            dir.join("01-image.jsonl"),
            "{\"type\":\"image\",\"image\":\"api:r2\",\"image_id\":\"sha256:2\",\"release\":\"r2\"}\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn each_run_folder_is_one_deploy_and_one_without_a_summary_is_running_or_unfinished() {
        let runs = std::env::temp_dir().join(format!("zdd-history-{}", std::process::id()));
        let _ = fs::remove_dir_all(&runs);
        let done = start(&runs, 1, "release");
        finish(
            &FinishArgs {
                run: done,
                result: "rolled-back".into(),
                failed_step: Some("health".into()),
                signal: None,
            },
            Progress::new("test", true),
        )
        .unwrap();
        let dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait_with_output().unwrap();
        start(&runs, dead_pid, "build");
        start(&runs, std::process::id(), "build");

        let service = ServiceArgs {
            service: "api".into(),
            project: None,
        };
        let deploys: Vec<Deploy> = runs::of_service(&runs, &service)
            .iter()
            .map(deploy)
            .collect();
        let seen: Vec<String> = deploys
            .iter()
            .map(|d| {
                format!(
                    "{} {:?} {:?} {:?}",
                    d.result, d.failed_step, d.to_release, d.source
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                r#"rolled-back Some("health") Some("r2") Some("release")"#,
                r#"unfinished None Some("r2") Some("build")"#,
                r#"running None Some("r2") Some("build")"#,
            ]
        );
        assert_eq!(deploys[1].steps.len(), 1, "the steps that ended");
        let text = table(&deploys);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("rolled-back (health)"), "{text}");
        fs::remove_dir_all(&runs).unwrap();
    }
}
