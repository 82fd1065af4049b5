//! `zdd-migrate`: schema migrations as their own deploy step — locked,
//! tracked, and checked for expand/contract compatibility.
//!
//! During a zero-downtime rollout the old and the new release both run
//! against one schema, so migrations come in phases (see [`source`]):
//! `up` applies the expand and data migrations before the new release
//! starts; `contract` applies the removals only after no replica of an
//! older release runs (asked of the Docker engine, see [`rollout`]).
//! The [`lint`] stops, before anything runs, the changes that would break
//! the old code or stall it behind a lock.
//!
//! The database work (see [`steps`] and [`db`]) is synchronous, on a
//! blocking thread: the PostgreSQL and SQLite clients block, and a
//! migration is a sequence anyway. Only the Docker parts are async.
//!
//! Records: `migration` (one per migration a command acts on or reports),
//! `lint`, `migration_status`, `migration_run`; see the README.

pub mod clock;
pub mod db;
pub mod lint;
pub mod oneoff;
pub mod record;
pub mod rollout;
pub mod rule;
pub mod source;
pub mod sql;
pub mod steps;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use zdd_core::cli::{Outcome, Progress};
use zdd_core::jsonl::RecordWriter;
use zdd_core::service::Service;
use zdd_core::{duration, Error, Result};

use crate::db::{Mode, Options, Target};
use crate::record::kind;
use crate::sql::Dialect;
use crate::steps::{Runner, Step};

const TOOL: &str = "zdd-migrate";

/// Locked, tracked, compatibility-checked schema migrations.
///
/// Migrations are files `VERSION_NAME.sql` in --dir, each starting with a
/// header such as `-- zdd: phase=expand` (expand, data or contract) and
/// optionally `-- zdd: transaction=off` and
/// `-- zdd: allow=RULE reason="…"`. The database is --database or
/// DATABASE_URL: `postgres://…`, `sqlite:PATH` or a plain path (SQLite).
/// Records go to stdout as JSON Lines, progress to stderr.
#[derive(Debug, Parser)]
#[command(name = "zdd-migrate", version, after_help = zdd_core::exit::HELP)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,

    /// Print no progress on stderr (errors are still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what `up` (or `contract`) would apply, and whether it would
    /// refuse; changes nothing.
    #[command(after_help = zdd_core::exit::HELP)]
    Plan {
        /// Plan the contract step instead of `up`.
        #[arg(long)]
        contract: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Apply the pending expand and data migrations, in version order.
    ///
    /// Refuses, running nothing, on lint errors in a pending migration, on
    /// drift (an applied file changed or vanished, an interrupted
    /// migration), or on a migration that failed outside a transaction.
    /// Stops at the first failing migration (exit 1).
    #[command(after_help = zdd_core::exit::HELP)]
    Up {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Apply the pending contract migrations, once no older release runs.
    ///
    /// Refused (exit 1, nothing run) while a running replica of --service
    /// has a release other than --release, as the Docker engine reports
    /// them, and also when the engine lists no running replica of --service
    /// at all (a misspelt --service or --project finds none), unless
    /// --no-replicas-expected says so; --force skips the check.
    #[command(after_help = zdd_core::exit::HELP)]
    Contract {
        /// The service whose replicas must all run --release.
        #[arg(long, required_unless_present = "force")]
        service: Option<String>,
        /// Only replicas of this Compose project (COMPOSE_PROJECT_NAME is
        /// not read).
        #[arg(long)]
        project: Option<String>,
        /// The release being rolled out (the `release` of zdd-build's
        /// image record).
        #[arg(long, required_unless_present = "force")]
        release: Option<String>,
        /// No running replica of --service is expected (not deployed yet,
        /// or stopped on purpose): finding none is fine. Replicas of
        /// another release still refuse.
        #[arg(long)]
        no_replicas_expected: bool,
        /// Skip the check for running replicas entirely.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Every migration (applied, pending, failed, running, drift) and a
    /// summary with the lock holder. Exit 1 if any failed or drifted.
    #[command(after_help = zdd_core::exit::HELP)]
    Status {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Take the most recently applied migration back with its down file
    /// (expand migrations only).
    #[command(after_help = zdd_core::exit::HELP)]
    Down {
        /// Refuse unless the latest applied migration has this version.
        #[arg(long)]
        version: Option<i64>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// After checking the database by hand: forget failed and interrupted
    /// runs (they run again on `up`) and accept changed checksums.
    #[command(after_help = zdd_core::exit::HELP)]
    Repair {
        /// Repair only this version (needed to forget an applied migration
        /// whose file is gone).
        #[arg(long)]
        version: Option<i64>,
        /// Mark failed or interrupted migrations applied instead of
        /// forgetting them (you finished them by hand). Needs --version.
        #[arg(long, requires = "version")]
        mark_applied: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Check the migrations for changes that break the code still running.
    /// Writes a `lint` record per finding; exit 1 on any error.
    #[command(after_help = zdd_core::exit::HELP)]
    Lint {
        /// The migrations folder.
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
        /// SQL dialect: postgres or sqlite (default: from --database /
        /// DATABASE_URL, else postgres).
        #[arg(long, value_parser = parse_dialect)]
        dialect: Option<Dialect>,
        /// Only used to pick the dialect.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// The migrations from this version on are not applied yet: a
        /// table (column, index, type) one of them creates is new to the
        /// later ones of the same step. Without it, only what a migration
        /// itself creates is new. (`up` and `plan` read this from the
        /// history table.)
        #[arg(long, value_name = "VERSION")]
        pending_from: Option<i64>,
    },
    /// Run the application's own migration command in a one-off container
    /// of the new image, on the service's networks; its exit code is the
    /// step's result.
    ///
    /// The image is --image, or the `image` record on stdin (from
    /// zdd-build), which is passed through. The container gets the
    /// environment and mounts of the service's newest running replica
    /// (minus what that replica's own image set), `-e`/`-v` on top, and the
    /// labels zdd.oneoff=true and zdd.service, so it is never a replica.
    #[command(after_help = zdd_core::exit::HELP)]
    Run(oneoff::Request),
}

/// Options of every command that opens the database.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// The database: postgres://user@host/db, sqlite:PATH or a file path.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database: String,
    /// The migrations folder.
    #[arg(long, default_value = "migrations")]
    pub dir: PathBuf,
    /// The history table (schema.table allowed on PostgreSQL).
    #[arg(long, default_value = "zdd_migrations")]
    pub table: String,
    /// How long to wait for another runner's lock (e.g. 30s, 5m).
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pub lock_wait: Duration,
    /// PostgreSQL lock_timeout for every migration statement (each
    /// transactional migration, each statement of a transaction=off one),
    /// so a DDL statement waiting for a busy table fails instead of
    /// stalling the queries queued behind it (0: no limit).
    #[arg(long, default_value = "5s", value_parser = duration::parse)]
    pub lock_timeout: Duration,
}

fn parse_dialect(text: &str) -> std::result::Result<Dialect, String> {
    Dialect::parse(text).ok_or_else(|| format!("`{text}`: use postgres or sqlite"))
}

/// Runs the command.
pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new(TOOL, args.quiet);
    match args.command {
        Command::Lint {
            dir,
            dialect,
            database,
            pending_from,
        } => {
            let dialect = match (dialect, database) {
                (Some(dialect), _) => dialect,
                (None, Some(url)) if !url.trim().is_empty() => Target::parse(&url)?.dialect(),
                (None, _) => Dialect::Postgres,
            };
            lint_command(&dir, dialect, pending_from, progress)
        }
        Command::Run(request) => oneoff::run(request, progress).await,
        Command::Contract {
            service,
            project,
            release,
            no_replicas_expected,
            force,
            db,
        } => {
            // Check the arguments and the folder before asking Docker.
            let prepared = Prepared::new(&db)?;
            if force {
                progress.warn("--force: not checking for replicas of older releases");
            } else {
                let (Some(service), Some(release)) = (service, release) else {
                    unreachable!("clap requires --service and --release without --force");
                };
                let service = Service::new(service, project);
                let gate = rollout::check(&service, &release, no_replicas_expected).await?;
                if let Some(refusal) = contract_refusal(&gate, &service, &release) {
                    progress.error(refusal);
                    return Ok(Outcome::StepFailed);
                }
                progress.info(contract_clearance(&gate, &service, &release));
            }
            blocking(move || prepared.apply(Step::Contract, progress)).await
        }
        Command::Up { db } => {
            let prepared = Prepared::new(&db)?;
            blocking(move || prepared.apply(Step::Up, progress)).await
        }
        Command::Plan { contract, db } => {
            let prepared = Prepared::new(&db)?;
            let step = if contract { Step::Contract } else { Step::Up };
            blocking(move || prepared.with_runner(Mode::ReadOnly, progress, |r| r.plan(step))).await
        }
        Command::Status { db } => {
            let prepared = Prepared::new(&db)?;
            let database = prepared.target.describe();
            let table = db.table.clone();
            blocking(move || {
                prepared.with_runner(Mode::ReadOnly, progress, |r| r.status(database, table))
            })
            .await
        }
        Command::Down { version, db } => {
            let prepared = Prepared::new(&db)?;
            blocking(move || prepared.with_runner(Mode::ReadWrite, progress, |r| r.down(version)))
                .await
        }
        Command::Repair {
            version,
            mark_applied,
            db,
        } => {
            let prepared = Prepared::new(&db)?;
            blocking(move || {
                prepared.with_runner(Mode::ReadWrite, progress, |r| {
                    r.repair(version, mark_applied)
                })
            })
            .await
        }
    }
}

/// Why `contract` refuses after this check, or `None` when it may go on.
fn contract_refusal(gate: &rollout::Gate, service: &Service, release: &str) -> Option<String> {
    let name = rollout::name(service);
    match gate {
        rollout::Gate::Current(_) | rollout::Gate::NoneExpected => None,
        rollout::Gate::Older(older) => Some(format!(
            "refusing to contract: {} replica(s) of {name} still run an older release than {release}: {}; retire them first (or --force)",
            older.len(),
            rollout::describe(older)
        )),
        rollout::Gate::NoReplicas => {
            let check = if service.project.is_some() {
                "--service and --project"
            } else {
                "--service (and --project for a Compose service)"
            };
            Some(format!(
                "refusing to contract: the Docker engine lists no running replica of {name}, so it cannot tell whether an older release still runs; check {check}, or, if no replica is expected (not deployed yet, stopped on purpose), run again with --no-replicas-expected"
            ))
        }
    }
}

/// The progress line when the check passed.
fn contract_clearance(gate: &rollout::Gate, service: &Service, release: &str) -> String {
    let name = rollout::name(service);
    match gate {
        rollout::Gate::NoneExpected => {
            format!("no running replica of {name}, as --no-replicas-expected says")
        }
        _ => format!("no replica of {name} runs a release other than {release}"),
    }
}

/// Runs blocking database work off the async runtime.
async fn blocking(work: impl FnOnce() -> Result<Outcome> + Send + 'static) -> Result<Outcome> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Failed(format!("the database worker failed: {e}")))?
}

/// A database command's inputs, checked before anything connects: the
/// target and the folder (with valid headers). The lint runs once the
/// history says which migrations are pending (see [`steps`]).
struct Prepared {
    target: Target,
    migrations: Vec<source::Migration>,
    options: Options,
    lock_wait: Duration,
}

impl Prepared {
    fn new(db: &DbArgs) -> Result<Prepared> {
        let target = Target::parse(&db.database)?;
        db::check_table_name(&db.table)?;
        let migrations = source::load(&db.dir)?;
        source::require_valid(&migrations)?;
        let runner = clock::runner();
        Ok(Prepared {
            target,
            migrations,
            options: Options {
                table: db.table.clone(),
                lock_timeout: db.lock_timeout,
                runner,
            },
            lock_wait: db.lock_wait,
        })
    }

    fn with_runner(
        &self,
        mode: Mode,
        progress: Progress,
        work: impl FnOnce(&mut Runner) -> Result<Outcome>,
    ) -> Result<Outcome> {
        let mut engine = db::open(&self.target, mode, &self.options)?;
        let mut runner = Runner {
            engine: engine.as_mut(),
            migrations: &self.migrations,
            dialect: self.target.dialect(),
            progress,
            lock_wait: self.lock_wait,
            runner: self.options.runner.clone(),
        };
        work(&mut runner)
    }

    fn apply(&self, step: Step, progress: Progress) -> Result<Outcome> {
        self.with_runner(Mode::ReadWrite, progress, |r| r.apply(step))
    }
}

/// `lint`: every finding as a record; exit 1 when any blocks.
fn lint_command(
    dir: &std::path::Path,
    dialect: Dialect,
    pending_from: Option<i64>,
    progress: Progress,
) -> Result<Outcome> {
    let started = Instant::now();
    let migrations = source::load(dir)?;
    let batch = match pending_from {
        Some(version) => lint::Batch::from_version(&migrations, version),
        None => lint::Batch::none(),
    };
    let findings = lint::lint(&migrations, dialect, &batch);
    let mut out = RecordWriter::stdout();
    let (mut errors, mut warnings, mut allowed) = (0, 0, 0);
    for record in findings.iter().flatten() {
        if record.allowed {
            allowed += 1;
        } else if record.blocks() {
            errors += 1;
        } else {
            warnings += 1;
        }
        out.write(kind::LINT, record)?;
    }
    progress.info(format_args!(
        "{} file(s): {errors} error(s), {warnings} warning(s), {allowed} allowed ({} ms)",
        migrations.len(),
        started.elapsed().as_millis()
    ));
    Ok(Outcome::from_success(errors == 0))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Args, clap::Error> {
        Args::try_parse_from(
            ["zdd-migrate"]
                .iter()
                .chain(args)
                .chain(&["--database", "app.db"]),
        )
    }

    #[test]
    fn contract_takes_no_replicas_expected() {
        let args = parse(&["contract", "--service", "api", "--release", "r2"]).unwrap();
        let Command::Contract {
            no_replicas_expected,
            force,
            ..
        } = args.command
        else {
            panic!("{:?}", args.command);
        };
        assert!(!no_replicas_expected && !force);

        let args = parse(&[
            "contract",
            "--service",
            "api",
            "--release",
            "r2",
            "--no-replicas-expected",
        ])
        .unwrap();
        let Command::Contract {
            service,
            release,
            no_replicas_expected,
            force,
            ..
        } = args.command
        else {
            panic!("{:?}", args.command);
        };
        assert!(no_replicas_expected && !force);
        assert_eq!(service.as_deref(), Some("api"));
        assert_eq!(release.as_deref(), Some("r2"));
    }

    #[test]
    fn no_replicas_expected_still_needs_the_service_and_release() {
        let error = parse(&["contract", "--no-replicas-expected"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        parse(&["contract", "--force"]).unwrap();
    }

    #[test]
    fn project_is_never_read_from_the_environment() {
        let mut command = Args::command();
        for sub in ["contract", "run"] {
            let sub = command.find_subcommand_mut(sub).unwrap();
            let project = sub
                .get_arguments()
                .find(|a| a.get_id() == "project")
                .unwrap();
            assert_eq!(project.get_env(), None, "{}", sub.get_name());
        }
    }

    #[test]
    fn the_refusals_name_the_service_and_the_way_on() {
        let service = Service::new("api", Some("shop".into()));
        let refusal = contract_refusal(&rollout::Gate::NoReplicas, &service, "r2").unwrap();
        assert!(
            refusal.contains("no running replica of service `api` of Compose project `shop`")
                && refusal.contains("--no-replicas-expected")
                && refusal.contains("check --service and --project"),
            "{refusal}"
        );
        assert_eq!(
            contract_refusal(&rollout::Gate::NoneExpected, &service, "r2"),
            None
        );
        assert_eq!(
            contract_refusal(&rollout::Gate::Current(1), &service, "r2"),
            None
        );
    }
}
