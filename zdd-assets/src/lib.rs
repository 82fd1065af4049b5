//! `zdd-assets`: frontend builds as content-hashed releases, switched
//! atomically, kept as long as browsers may still need them.
//!
//! The frontend half of a zero-downtime deploy has two failure modes the
//! backend does not: a user must never get the new `index.html` with old
//! CSS (or the reverse), and a browser that loaded the old `index.html`
//! a minute ago must still be able to fetch every file it names after the
//! new release goes live. Both follow from one layout (see [`root`]):
//! hashed files in a pool shared by all releases, and a live pointer that
//! moves in one `rename(2)`.
//!
//! - [`publish`]: a build folder, or `IMAGE:/path` copied out of a built
//!   image ([`image`]), becomes a release: references in HTML ([`html`])
//!   and CSS ([`css`]) are given hashed names ([`rewrite`], [`url`]),
//!   leaves first ([`leaves`], [`build`]); bundler-hashed names
//!   ([`bundler`]) and names given with `--keep-name` ([`keep`]) are kept.
//!   Every file is stored once across releases ([`store`]); the release's
//!   [`manifest`] says what it is made of.
//! - `activate`: the live pointer moves to an earlier release (rollback).
//! - `list`: the releases and when each was live.
//! - [`prune`]: releases outside the newest N that stopped being live long
//!   enough ago go, then the pool files and objects no retained release uses.
//! - [`nginx`]: the server configuration for a root.
//!
//! Every subcommand writes JSON Lines records ([`record`]) on stdout and
//! reads none: it starts a pipeline, or ends one.

pub mod build;
pub mod bundler;
pub mod cache;
pub mod css;
pub mod hash;
pub mod html;
pub mod image;
pub mod keep;
pub mod leaves;
pub mod manifest;
pub mod meter;
pub mod nginx;
pub mod prune;
pub mod publish;
pub mod record;
pub mod refs;
pub mod rewrite;
pub mod root;
pub mod source;
pub mod store;
pub use zdd_core::time;
pub mod url;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use zdd_core::cli::{Outcome, Progress};
use zdd_core::jsonl::RecordWriter;
use zdd_core::{duration, Error, Result};

use crate::record::{ReleaseRecord, PRUNE, RELEASE};
use crate::root::{Activation, Listed, Root};

/// The tool's name, as it prefixes every stderr line.
pub const TOOL: &str = "zdd-assets";

const LONG_ABOUT: &str = "\
Publish frontend builds as content-hashed releases, switch the live one \
atomically, and keep older releases' files as long as browsers may need them.

Files that HTML (src, href on <link>, srcset, modulepreload) and CSS (url(), \
@import) reference go into a pool shared by all releases as name-<sha256>.ext; \
names a bundler already hashed are kept. Every file is stored once across \
releases. The web server's root is ROOT/live, \
a symlink replaced by rename(2): every request sees the old release or the new \
one, never a mix. Each subcommand writes JSON Lines records on stdout.";

/// Publish frontend builds as content-hashed releases with an atomic switch.
#[derive(Debug, Parser)]
#[command(name = "zdd-assets", version, long_about = LONG_ABOUT, after_help = zdd_core::exit::HELP)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,

    /// Print no progress on stderr (errors are still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RootArg {
    /// The asset root (a new or empty folder becomes one on the first
    /// publish).
    #[arg(long, value_name = "DIR", env = "ZDD_ASSETS_ROOT")]
    pub root: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a build as a release and make it live.
    ///
    /// SOURCE is a build folder, or IMAGE:/path to copy the build out of a
    /// built image (the image is never run or pulled). Writes one
    /// `asset_release` record. The same build published again reuses its
    /// release.
    #[command(after_help = zdd_core::exit::HELP)]
    Publish {
        /// The build folder, or IMAGE:/path.
        source: String,
        #[command(flatten)]
        root: RootArg,
        /// Create the release but leave the live one as it is (activate
        /// it later).
        #[arg(long)]
        no_activate: bool,
        /// Refuse (exit 2, nothing written) when a reference cannot be
        /// resolved, instead of warning.
        #[arg(long)]
        strict: bool,
        /// Hash every file again instead of trusting the stat cache.
        #[arg(long)]
        rehash: bool,
        /// Keep the name of files matching GLOB (a file name such as
        /// `minus.png`, or a build path such as `_static/*.png`): served
        /// from the release under their own name, references left as
        /// written; for files a script names by their original name.
        /// Repeatable.
        #[arg(long, value_name = "GLOB")]
        keep_name: Vec<String>,
        /// Print progress (files and bytes so far) at most this often.
        #[arg(long, default_value = "1s", value_parser = duration::parse, value_name = "DURATION")]
        progress_every: Duration,
        /// How long to wait for another writer on the same root (e.g. 30s).
        #[arg(long, default_value = "0s", value_parser = duration::parse, value_name = "DURATION")]
        lock_wait: Duration,
    },
    /// Make an earlier release live again (rollback).
    ///
    /// RELEASE is a release id, a unique prefix of one or of its hash
    /// part, or `previous` (the release live before the current one).
    /// Writes one `asset_release` record.
    #[command(after_help = zdd_core::exit::HELP)]
    Activate {
        release: String,
        #[command(flatten)]
        root: RootArg,
        /// How long to wait for another writer on the same root (e.g. 30s).
        #[arg(long, default_value = "0s", value_parser = duration::parse, value_name = "DURATION")]
        lock_wait: Duration,
    },
    /// List the releases, oldest first: which is live, when each was live.
    ///
    /// Writes one `asset_release` record per release.
    #[command(after_help = zdd_core::exit::HELP)]
    List {
        #[command(flatten)]
        root: RootArg,
    },
    /// Delete old releases, then pool files and objects no retained release uses.
    ///
    /// A release is deleted only when it is outside the newest N and also
    /// stopped being live (or, never live, was created) more than
    /// --min-age ago. The live release is never deleted. Writes one
    /// `asset_prune` record per release and pool file deleted, then a
    /// summary.
    #[command(after_help = zdd_core::exit::HELP)]
    Prune {
        #[command(flatten)]
        root: RootArg,
        /// Keep the newest N releases whatever their age.
        #[arg(long, value_name = "N")]
        keep: usize,
        /// Keep releases that stopped being live less than this long ago
        /// (e.g. 30m, 168h).
        #[arg(long, value_parser = duration::parse, value_name = "DURATION")]
        min_age: Duration,
        /// Say what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long to wait for another writer on the same root (e.g. 30s).
        #[arg(long, default_value = "0s", value_parser = duration::parse, value_name = "DURATION")]
        lock_wait: Duration,
    },
    /// Print the nginx configuration that serves the root.
    ///
    /// Hashed files: `Cache-Control: public, max-age=31536000, immutable`,
    /// a 404 when missing (never the SPA page); pages `no-cache`.
    #[command(after_help = zdd_core::exit::HELP)]
    Nginx {
        #[command(flatten)]
        root: RootArg,
        /// Answer paths without an extension (client-side routes) with the
        /// live index.html.
        #[arg(long)]
        spa: bool,
    },
}

/// Runs the subcommand and writes its records.
pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new(TOOL, args.quiet);
    let mut out = RecordWriter::stdout();
    match args.command {
        Command::Publish {
            source,
            root,
            no_activate,
            strict,
            rehash,
            keep_name,
            progress_every,
            lock_wait,
        } => {
            let options = publish::Options {
                source,
                root: root.root,
                activate: !no_activate,
                strict,
                rehash,
                lock_wait,
                keep: keep_name,
                progress_every,
            };
            let record = publish::publish(&options, progress).await?;
            out.write(RELEASE, &record)?;
        }
        Command::Activate {
            release,
            root,
            lock_wait,
        } => {
            let record = activate(&root.root, &release, lock_wait, progress)?;
            out.write(RELEASE, &record)?;
        }
        Command::List { root } => {
            for record in list(&root.root)? {
                out.write(RELEASE, &record)?;
            }
        }
        Command::Prune {
            root,
            keep,
            min_age,
            dry_run,
            lock_wait,
        } => {
            let root = Root::open(&root.root)?;
            let _lock = if dry_run {
                None
            } else {
                Some(root.lock(lock_wait)?)
            };
            let (plan, history, reconciled) = prune::plan(&root, keep, min_age, time::now_ms())?;
            if !dry_run {
                if reconciled {
                    root.write_history(&history)?;
                }
                prune::execute(&root, &plan)?;
            }
            let bytes: u64 = plan.files.iter().chain(&plan.objects).map(|(_, b)| b).sum();
            progress.info(format_args!(
                "{} {} release(s), {} pool file(s) and {} object(s) ({bytes} bytes); kept {}",
                if dry_run { "would delete" } else { "deleted" },
                plan.releases.len(),
                plan.files.len(),
                plan.objects.len(),
                plan.kept.len()
            ));
            for record in prune::records(&plan, dry_run) {
                out.write(PRUNE, &record)?;
            }
        }
        Command::Nginx { root, spa } => {
            let root = Root::open(&root.root)?;
            let dir = std::fs::canonicalize(&root.dir)
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", root.dir.display())))?;
            print!("{}", nginx::snippet(&dir, spa)?);
        }
    }
    Ok(Outcome::Success)
}

/// Finds a release by id, unique prefix (of the id or its hash part), or
/// `previous`.
fn resolve_release(root: &Root, name: &str) -> Result<String> {
    let listed = root.list_releases()?;
    if name == "previous" {
        let (history, _) = root.history()?;
        let live = root.live_release()?;
        return history
            .iter()
            .rev()
            .map(|a| &a.release)
            .find(|id| Some(*id) != live.as_ref() && listed.iter().any(|l| &l.id == *id))
            .cloned()
            .ok_or_else(|| Error::Usage("no earlier live release is left to go back to".into()));
    }
    if listed.iter().any(|l| l.id == name) {
        return Ok(name.to_owned());
    }
    let matches: Vec<&Listed> = listed
        .iter()
        .filter(|l| {
            !name.is_empty()
                && (l.id.starts_with(name)
                    || l.id
                        .split_once('-')
                        .is_some_and(|(_, hash)| hash.starts_with(name)))
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(Error::Usage(format!(
            "no release `{name}` in {} (see `zdd-assets list`)",
            root.dir.display()
        ))),
        many => Err(Error::Usage(format!(
            "`{name}` matches {} releases: {}",
            many.len(),
            many.iter()
                .map(|l| l.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Moves the live pointer to an existing release.
fn activate(
    dir: &std::path::Path,
    name: &str,
    lock_wait: Duration,
    progress: Progress,
) -> Result<ReleaseRecord> {
    let root = Root::open(dir)?;
    let id = resolve_release(&root, name)?;
    let _lock = root.lock(lock_wait)?;
    let release = root.release(&id);
    let meta = root
        .list_releases()?
        .into_iter()
        .find(|l| l.id == id)
        .and_then(|l| l.meta)
        .ok_or_else(|| Error::Failed(format!("release {id} is gone or damaged")))?;
    manifest::Manifest::read(&release.join("manifest.json"))?;
    if !release.join("site").is_dir() {
        return Err(Error::Failed(format!("release {id} has no site folder")));
    }
    let (mut history, reconciled) = root.history()?;
    let before = root.live_release()?;
    let switched = before.as_deref() != Some(id.as_str());
    if switched {
        root.switch_live(&id)?;
        history.push(Activation::new(id.clone(), time::now_ms()));
        progress.info(format_args!(
            "{id} is live{}",
            before
                .as_deref()
                .map(|b| format!(" (was {b})"))
                .unwrap_or_default()
        ));
    } else {
        progress.info(format_args!("{id} is already live"));
    }
    if switched || reconciled {
        root.write_history(&history)?;
    }
    Ok(ReleaseRecord {
        id,
        root: root.dir.display().to_string(),
        live: true,
        previous: before.filter(|_| switched),
        switched: Some(switched),
        source: Some(meta.source),
        created: Some(meta.created),
        files: Some(meta.files),
        bytes: Some(meta.bytes),
        ..ReleaseRecord::default()
    })
}

/// One record per release, oldest first.
fn list(dir: &std::path::Path) -> Result<Vec<ReleaseRecord>> {
    let root = Root::open(dir)?;
    let (history, _) = root.history()?;
    let live = root.live_release()?;
    Ok(root
        .list_releases()?
        .into_iter()
        .map(|listed| {
            let periods = prune::periods(&history, &listed.id, live.as_deref());
            let meta = listed.meta.as_ref();
            ReleaseRecord {
                live: live.as_deref() == Some(listed.id.as_str()),
                root: root.dir.display().to_string(),
                source: meta.map(|m| m.source.clone()),
                created: meta.map(|m| m.created.clone()),
                files: meta.map(|m| m.files),
                bytes: meta.map(|m| m.bytes),
                live_periods: Some(prune::period_records(&periods)),
                damaged: meta.is_none().then_some(true),
                id: listed.id,
                ..ReleaseRecord::default()
            }
        })
        .collect())
}
