//! `zdd-releases`: the releases zdd holds for a service.
//!
//! zdd-build tags every image by the content hash of what it was built
//! from, so every release a service ran is still an image on the engine
//! until something removes it. This tool makes that usable:
//!
//! - `zdd-releases SERVICE` lists them ([`catalog`]): image, when built,
//!   when last deployed and by which run, which serves, which served
//!   before;
//! - `zdd-releases image SERVICE REL|--previous` writes the `image` record
//!   of one, as zdd-build would, so `zdd-deploy --release`/`--rollback`
//!   runs the same pipeline without a build context;
//! - `zdd-releases prune SERVICE` removes the images and run folders the
//!   retention rule lets go ([`retention`]).

pub mod catalog;
pub mod engine;
pub mod retention;

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;
use zdd_core::cli::{Outcome, Progress};
use zdd_core::jsonl::RecordWriter;
use zdd_core::record::ImageRecord;
use zdd_core::service::Service;
use zdd_core::{docker, duration, time, Error, Result};
use zdd_run::runs::{self, RunFolder};
use zdd_run::ServiceArgs;

use crate::catalog::{Attempt, Lineage, Release};

/// The releases zdd holds for a service: list them, write the image
/// record of one to deploy it again, prune the rest.
///
/// Without a subcommand: one `release` record per release, oldest first
/// (or a table with --table). A release is an image zdd-build tagged
/// REPO:RELEASE for the service (label zdd.built-for), or one a run folder
/// names; what serves comes from the running replicas, when and by which
/// run it was deployed from the run folders (STATE/runs, or --runs-dir).
#[derive(Debug, Parser)]
#[command(
    name = "zdd-releases",
    version,
    after_help = EXIT_HELP,
    subcommand_negates_reqs = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub which: Which,

    /// A table for people instead of JSON Lines.
    #[arg(long)]
    pub table: bool,

    /// Print no progress on stderr (errors are still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

const EXIT_HELP: &str = "\
Exit codes:
  0  done
  1  prune: an image or folder could not be removed (the records say which)
  2  usage or input error (image: no such release, or its image is gone;
     prune: another deploy holds the lock); nothing was changed";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the `image` record of a release (as zdd-build would, with
    /// `built: false`) for zdd-scale: RELEASE is a release or a unique
    /// prefix of one; --previous is the release that served before the
    /// serving one. A release whose image is gone is an input error.
    Image(ImageArgs),

    /// Remove the images of all but the newest --keep releases (never the
    /// serving one, the previous one, or one a container uses) and the run
    /// folders outside the newest --keep-runs that ended more than
    /// --runs-min-age ago (never an unfinished one). Takes the service's
    /// deploy lock (see zdd-deploy) unless --no-lock. One `release_prune`
    /// record per image or folder removed, then a summary.
    Prune(PruneArgs),
}

/// Which service, and where its run folders are.
#[derive(Debug, Clone, clap::Args)]
pub struct Which {
    /// The service.
    #[arg(value_name = "SERVICE", required = true)]
    pub service: Option<String>,
    /// The Compose project whose service it is.
    #[arg(long)]
    pub project: Option<String>,
    /// Where run folders are (default: STATE/runs).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    #[command(flatten)]
    pub which: Which,
    /// The release (or a unique prefix of one).
    #[arg(value_name = "RELEASE", required_unless_present = "previous")]
    pub release: Option<String>,
    /// The release that served before the serving one.
    #[arg(long, conflicts_with = "release")]
    pub previous: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub which: Which,
    /// Keep the images of the newest N releases (besides the serving and
    /// the previous one).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub keep: usize,
    /// Keep the newest N run folders.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub keep_runs: usize,
    /// Keep any run folder that ended less than this long ago (`7d`, `12h`).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = duration::parse)]
    pub runs_min_age: Duration,
    /// Say what would go; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The caller holds the service's deploy lock (zdd-deploy does).
    #[arg(long)]
    pub no_lock: bool,
    /// Wait up to this many seconds for the lock.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub lock_wait: u64,
}

impl Which {
    fn service_args(&self) -> ServiceArgs {
        ServiceArgs {
            service: self.service.clone().unwrap_or_default(),
            project: self.project.clone(),
        }
    }
}

/// A service's releases, with the run folders and lineage they came from.
pub struct Catalog {
    pub releases: Vec<Release>,
    pub folders: Vec<RunFolder>,
    pub lineage: Lineage,
}

/// Asks the engine and reads the run folders.
pub async fn catalog(docker: &bollard::Docker, which: &Which) -> Result<Catalog> {
    let service = which.service_args();
    let folders = runs::of_service(&runs::runs_dir(which.runs_dir.as_deref())?, &service);
    let attempts: Vec<Attempt> = folders.iter().filter_map(Attempt::of).collect();
    let images = engine::held_images(docker, &service.service, &attempts).await?;
    let owner = Service::new(service.service.clone(), service.project.clone());
    let replicas = engine::replicas_by_release(docker, &owner).await?;
    let releases = catalog::assemble(
        &service.service,
        service.project.as_deref(),
        &images,
        &attempts,
        &replicas,
    );
    Ok(Catalog {
        releases,
        folders,
        lineage: catalog::lineage(&attempts, &replicas),
    })
}

pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-releases", args.quiet);
    let docker = docker::connect().await?;
    match args.command {
        None => {
            let catalog = catalog(&docker, &args.which).await?;
            if args.table {
                std::io::stdout().write_all(catalog::table(&catalog.releases).as_bytes())?;
                return Ok(Outcome::Success);
            }
            let mut out = RecordWriter::stdout();
            for release in &catalog.releases {
                out.write(catalog::RELEASE, release)?;
            }
            Ok(Outcome::Success)
        }
        Some(Command::Image(image)) => write_image(&docker, &image, progress).await,
        Some(Command::Prune(prune)) => prune_service(&docker, &prune, progress).await,
    }
}

/// `zdd-releases image`.
async fn write_image(
    docker: &bollard::Docker,
    args: &ImageArgs,
    progress: Progress,
) -> Result<Outcome> {
    let catalog = catalog(docker, &args.which).await?;
    let service = args.which.service_args().service;
    let release = match (&args.release, args.previous) {
        (Some(wanted), _) => find(&catalog.releases, wanted, &service)?,
        (None, _) => {
            let previous = catalog.releases.iter().find(|r| r.previous);
            previous.ok_or_else(|| {
                let why = match catalog.lineage.current.as_deref() {
                    None => "no release of it serves".to_owned(),
                    Some(current) => format!(
                        "it is on {current}, and no successful deploy to {current} came from another release"
                    ),
                };
                Error::Usage(format!(
                    "{service} has no earlier release to roll back to ({why}); deploy one by name: zdd-deploy --release RELEASE (see zdd-releases {service})"
                ))
            })?
        }
    };
    if !release.present {
        let by = release
            .last_run
            .as_deref()
            .map(|r| format!(", last deployed by run {r}"))
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "release {} of {service}{by}: its image {} is gone (pruned?); deploy it from its build context instead",
            release.release, release.image
        )));
    }
    progress.info(format_args!(
        "{service} release {} is image {}{}",
        release.release,
        release.image,
        release
            .built
            .as_deref()
            .map(|b| format!(", built {b}"))
            .unwrap_or_default()
    ));
    let record = ImageRecord {
        service: Some(service),
        image: release.image.clone(),
        image_id: release.image_id.clone().unwrap_or_default(),
        release: release.release.clone(),
        context_hash: release.context_hash.clone(),
        built: false,
        extra: Default::default(),
    };
    RecordWriter::stdout().image(&record)?;
    Ok(Outcome::Success)
}

/// The release `wanted` names: itself, or the one release it is a prefix of.
fn find<'a>(releases: &'a [Release], wanted: &str, service: &str) -> Result<&'a Release> {
    if let Some(exact) = releases.iter().find(|r| r.release == wanted) {
        return Ok(exact);
    }
    let matching: Vec<&Release> = releases
        .iter()
        .filter(|r| !wanted.is_empty() && r.release.starts_with(wanted))
        .collect();
    let known = || {
        let names: Vec<&str> = releases.iter().map(|r| r.release.as_str()).collect();
        if names.is_empty() {
            "it has none".to_owned()
        } else {
            format!("its releases: {}", names.join(", "))
        }
    };
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::Usage(format!(
            "no release `{wanted}` of {service} ({})",
            known()
        ))),
        many => Err(Error::Usage(format!(
            "`{wanted}` names {} releases of {service}: {}; give more of it",
            many.len(),
            many.iter()
                .map(|r| r.release.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The record type of what prune removed.
pub const PRUNE: &str = "release_prune";

/// A `release_prune` record.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pruned {
    Image {
        release: String,
        image: String,
        dry_run: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Run {
        run: String,
        dir: String,
        dry_run: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Summary {
        kept: Vec<String>,
        images: usize,
        runs: usize,
        dry_run: bool,
    },
}

/// `zdd-releases prune`.
async fn prune_service(
    docker: &bollard::Docker,
    args: &PruneArgs,
    progress: Progress,
) -> Result<Outcome> {
    let service = args.which.service_args();
    let _lock = match args.no_lock {
        true => None,
        false => Some(
            zdd_run::lock::hold(&service, Duration::from_secs(args.lock_wait), progress).await?,
        ),
    };
    let catalog = catalog(docker, &args.which).await?;
    let in_use = engine::image_ids_in_use(docker).await?;
    let images = retention::images_to_prune(&catalog.releases, args.keep, &in_use);
    let going: HashSet<&str> = images.iter().map(|r| r.release.as_str()).collect();
    let kept: Vec<&Release> = catalog
        .releases
        .iter()
        .filter(|r| r.present && !going.contains(r.release.as_str()))
        .collect();
    let mut protected: HashSet<String> = kept.iter().filter_map(|r| r.last_run.clone()).collect();
    protected.extend(catalog.lineage.via_run.clone());
    let folders = retention::runs_to_prune(
        &catalog.folders,
        args.keep_runs,
        args.runs_min_age,
        time::now_ms(),
        &protected,
    );

    let mut out = RecordWriter::stdout();
    let mut ok = true;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removing"
    };
    for release in &images {
        progress.info(format_args!("{verb} image {}", release.image));
        let error = match args.dry_run {
            true => None,
            false => engine::remove_image(docker, &release.image)
                .await
                .err()
                .map(|e| e.to_string()),
        };
        if let Some(error) = &error {
            progress.error(error);
            ok = false;
        }
        out.write(
            PRUNE,
            &Pruned::Image {
                release: release.release.clone(),
                image: release.image.clone(),
                dry_run: args.dry_run,
                error,
            },
        )?;
    }
    for folder in &folders {
        progress.info(format_args!("{verb} run folder {}", folder.dir.display()));
        let error = match args.dry_run {
            true => None,
            false => std::fs::remove_dir_all(&folder.dir)
                .err()
                .map(|e| format!("removing {}: {e}", folder.dir.display())),
        };
        if let Some(error) = &error {
            progress.error(error);
            ok = false;
        }
        out.write(
            PRUNE,
            &Pruned::Run {
                run: folder.info.run.clone(),
                dir: folder.dir.display().to_string(),
                dry_run: args.dry_run,
                error,
            },
        )?;
    }
    out.write(
        PRUNE,
        &Pruned::Summary {
            kept: kept.iter().map(|r| r.release.clone()).collect(),
            images: images.len(),
            runs: folders.len(),
            dry_run: args.dry_run,
        },
    )?;
    progress.info(format_args!(
        "{} {} image(s) and {} run folder(s) of {}; kept {}",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        images.len(),
        folders.len(),
        service.service,
        kept.iter()
            .map(|r| r.release.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(Outcome::from_success(ok))
}
