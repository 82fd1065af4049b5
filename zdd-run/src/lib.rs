//! `zdd-run`: the bookkeeping of one `zdd-deploy` run.
//!
//! `scripts/zdd-deploy` is the pipeline a user reads to learn zdd: a
//! sequence of tool calls. The decisions around those calls that need
//! tests of their own live here instead of in bash:
//!
//! - [`lock`]: one deploy per service and engine on the whole host, a lock
//!   the child tools never inherit, released when the deploy dies, and a
//!   refusal that names the live holder;
//! - [`runs`]: the run folder (private: an app's crash log can carry
//!   secrets), who started it from where, and its `summary.json`, written
//!   by something that escapes JSON; runs that never finished (killed);
//! - [`rollback`]: which records a rollback starts from, including replicas
//!   a killed step started but never wrote down, and whether there is
//!   still an old release to go back to;
//! - [`history`]: `zdd-history`, every deploy of a service from its run
//!   folders (the crate's second binary).

pub mod history;
pub mod lock;
pub mod rollback;
pub mod runs;
pub mod state;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::Result;

/// The bookkeeping of a zdd-deploy run: lock, run folder, summary, and
/// the records a rollback starts from.
///
/// State lives in one directory per host: $ZDD_STATE_DIR, else
/// /var/lib/zdd for root, else $XDG_STATE_HOME/zdd (~/.local/state/zdd).
/// Locks are in its `locks/`, run folders in its `runs/` unless
/// --runs-dir says otherwise.
#[derive(Debug, Parser)]
#[command(name = "zdd-run", version, after_help = EXIT_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--help`'s exit codes: the shared three, and what 1 means here.
const EXIT_HELP: &str = "\
Exit codes:
  0  done
  1  the step failed (lock: -; rollback-records: there is no old release to
     go back to, the records are still written)
  2  usage or input error, or (lock) another deploy holds the lock; nothing
     was changed";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the lock file of a service on this engine (creating its
    /// folder): STATE/locks/SERVICE[.PROJECT]-ENGINE.lock.
    LockFile(ServiceArgs),

    /// Take the lock on an open file descriptor (`exec 9>>"$lock"`), so it
    /// stays held by the caller after this process exits; write who holds
    /// it. Refused (exit 2) naming the holder when another deploy has it.
    Lock(lock::LockArgs),

    /// Create a run folder (mode 0700) with `run.json` (who, where, what);
    /// print its path.
    Begin(runs::BeginArgs),

    /// Write the run's `summary.json` from `run.json` and `steps.jsonl`,
    /// and print a one-line summary on stderr.
    Finish(runs::FinishArgs),

    /// Print the run folders of a service that never finished (no
    /// `summary.json`): killed deploys, oldest first.
    Unfinished(runs::UnfinishedArgs),

    /// Write the records a rollback of RUN starts from: its newest complete
    /// step output, plus every container labelled `zdd.run=RUN` that those
    /// records miss (a step killed before it wrote them), as new replicas
    /// the run started. Nothing at all when nothing was started. Exit 1
    /// when there is no old release to go back to (an old replica is
    /// already retired or gone): the new release serves.
    RollbackRecords {
        /// The run folder.
        run: PathBuf,
    },

    /// Print a number of the `batch` record in FILE (`zdd-scale --batch`):
    /// `old_left`, the old replicas left after that batch (0 after the
    /// last), or `replicas`, the size the service is kept at.
    Batch {
        #[arg(value_parser = ["old_left", "replicas"])]
        field: String,
        /// The output of `zdd-scale --batch`.
        file: PathBuf,
    },

    /// Print the release that served before RUN began (the old replicas'),
    /// which a batched rollout that fails is rolled back to; nothing when
    /// no old replica ran.
    FromRelease {
        /// The run folder.
        run: PathBuf,
    },
}

/// Which service, as every zdd tool names it.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The service.
    #[arg(long)]
    pub service: String,
    /// The Compose project whose service it is.
    #[arg(long)]
    pub project: Option<String>,
}

pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-run", args.common.quiet);
    match args.command {
        Command::LockFile(service) => {
            let path = lock::lock_file(&state::state_dir()?, &service).await?;
            println!("{}", path.display());
            Ok(Outcome::Success)
        }
        Command::Lock(lock_args) => lock::take(&lock_args, progress),
        Command::Begin(begin) => {
            let dir = runs::begin(&begin)?;
            println!("{}", dir.display());
            Ok(Outcome::Success)
        }
        Command::Finish(finish) => {
            runs::finish(&finish, progress)?;
            Ok(Outcome::Success)
        }
        Command::Unfinished(unfinished) => {
            for dir in runs::unfinished(&unfinished)? {
                println!("{}", dir.display());
            }
            Ok(Outcome::Success)
        }
        Command::RollbackRecords { run } => rollback::write_records(&run, progress).await,
        Command::Batch { field, file } => {
            println!("{}", runs::batch_field(&file, &field)?);
            Ok(Outcome::Success)
        }
        Command::FromRelease { run } => {
            if let Some(release) = runs::from_release(&run) {
                println!("{release}");
            }
            Ok(Outcome::Success)
        }
    }
}
