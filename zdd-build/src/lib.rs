//! `zdd-build`: build a service's image, tagged by what it is built from.
//!
//! The first step of a deploy. It turns a build context into an image whose
//! tag is a content hash, and says so with one `image` record on stdout for
//! the next step (`zdd-scale`) to start replicas of.
//!
//! Why a content hash rather than a timestamp or a git sha: the tag is the
//! release name every later step uses (`zdd.release` on containers, `old`
//! versus `new`), so it must change exactly when the image would. An
//! unchanged context is the same release, and building it again is skipped
//! (the pipeline stays idempotent); an earlier release keeps its tag, so a
//! rollback is a deploy of an image that is still there, without a rebuild.
//!
//! How:
//!
//! 1. [`plan`] checks everything it can without the engine (the context
//!    directory, the Dockerfile, `--build-arg`s, the repository name) and
//!    archives the context canonically ([`context`]), honouring
//!    `.dockerignore` as the docker CLI does ([`dockerignore`]). Any problem
//!    here is a usage error (exit 2) and nothing has been sent anywhere.
//! 2. The context hash is sha256 over that archive plus the Dockerfile
//!    path, build args and service; the release is its first 16 hex digits;
//!    the image is `REPO:RELEASE`.
//! 3. If `REPO:RELEASE` exists and its `zdd.context-hash` label is the full
//!    hash, the build is skipped. Otherwise the same archive bytes are sent
//!    to the engine's build API, the build log goes to stderr, and a build
//!    error is exit 1 with no record.
//! 4. One `image` record is written.

pub mod context;
pub mod dockerignore;
pub mod repository;

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use bollard::query_parameters::BuildImageOptionsBuilder;
use clap::Parser;
use futures_util::StreamExt;
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::docker::{describe_error, is_not_found, Docker};
use zdd_core::jsonl::RecordWriter;
use zdd_core::labels;
use zdd_core::record::ImageRecord;
use zdd_core::{Error, Result};

use crate::context::{Archive, BuildInputs};

/// The tool's name, as it prefixes every stderr line.
pub const TOOL: &str = "zdd-build";

/// How many hex digits of the context hash make the release (the tag).
pub const RELEASE_LEN: usize = 16;

const ABOUT: &str = "Build a Docker image tagged by the content hash of its build context";

const LONG_ABOUT: &str = "\
Build a Docker image tagged by the content hash of its build context, and \
write one `image` record (JSON Lines) on stdout for the next step.

The context directory is archived as `docker build` would send it: \
.dockerignore is honoured with Docker's rules (patterns relative to the \
context, `*` `?` `[...]` `**`, `!` exceptions where the last match wins, a \
directory excluded with everything in it), the Dockerfile and .dockerignore \
are always sent, symlinks are sent as symlinks. The archive is canonical \
(entries sorted, mtime 0, uid/gid 0, modes 0644/0755), so the same tree \
gives the same bytes wherever and whenever it is checked out.

The context hash is sha256 over those bytes, the Dockerfile's path and the \
build args. The release is its first 16 hex digits and the \
image is tagged REPO:RELEASE. If that image already exists with a matching \
zdd.context-hash label, nothing is built (\"already built, skipping\"). \
Otherwise the same bytes are sent to the engine's build API (classic \
builder, intermediate containers removed), labelled \
zdd.context-hash=sha256:HASH and, with --service S, zdd.built-for=S (never \
zdd.service: a container someone runs \
by hand from the image must not pass for a replica); the build log goes to \
stderr (silenced by -q). The engine is found through DOCKER_HOST.

Output, one line:
  {\"type\":\"image\",\"service\":\"api\",\"image\":\"api:0123456789abcdef\",\
\"image_id\":\"sha256:...\",\"release\":\"0123456789abcdef\",\
\"context_hash\":\"sha256:...\",\"built\":true}
`context_hash` is sha256: and the full 64 hex digits; `built` is false \
when the image was already there; `service` is left out \
without --service. A failed build prints the engine's error, writes no \
record and exits 1.

Usage errors (exit 2, checked before the engine is contacted): the context \
is not a readable directory, it has no Dockerfile (or --file is missing or \
outside it), a file in it cannot be read, .dockerignore has an invalid \
pattern, a --build-arg or --repository is invalid.";

/// Command-line arguments of `zdd-build`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = TOOL,
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = zdd_core::exit::HELP,
)]
pub struct Args {
    /// The service the image is for: put in the record (so zdd-scale
    /// knows which service to roll out), and the default repository name.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,

    /// Image repository to tag (`name`, `team/name`, `host:port/name`; no
    /// tag, the tag is the release). Default: the service name, else the
    /// context directory's name, lowercased and made a valid name.
    #[arg(long, value_name = "REPO")]
    pub repository: Option<String>,

    /// The Dockerfile, as `docker build -f` takes it (relative to the
    /// current directory); it must be inside the context. Default:
    /// CONTEXT_DIR/Dockerfile (or CONTEXT_DIR/dockerfile).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// A build-time variable, NAME=VALUE; NAME alone takes the value from
    /// the environment (left out if unset). Repeatable. Part of the hash.
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,

    #[command(flatten)]
    pub common: CommonArgs,

    /// The build context: the directory whose files the Dockerfile sees.
    #[arg(value_name = "CONTEXT_DIR")]
    pub context: PathBuf,
}

/// Everything decided before the engine is contacted.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The context directory, canonical.
    pub context_dir: PathBuf,
    /// The service named on the command line.
    pub service: Option<String>,
    /// Dockerfile path and build args.
    pub inputs: BuildInputs,
    /// The repository the image is tagged in.
    pub repository: String,
    /// The canonical archive of the context.
    pub archive: Archive,
    /// The full context hash, 64 hex digits.
    pub hash: String,
}

impl Plan {
    /// The release: the first [`RELEASE_LEN`] hex digits of the hash.
    pub fn release(&self) -> &str {
        &self.hash[..RELEASE_LEN]
    }

    /// `REPO:RELEASE`.
    pub fn image(&self) -> String {
        format!("{}:{}", self.repository, self.release())
    }

    /// `sha256:<hash>`, as recorded and labelled.
    pub fn context_hash(&self) -> String {
        format!("sha256:{}", self.hash)
    }
}

/// Checks the arguments and archives the context; every error is a usage
/// error naming the path or argument, and nothing has been changed.
pub fn plan(args: &Args) -> Result<Plan> {
    let service = match &args.service {
        Some(s) if s.trim().is_empty() || s.chars().any(char::is_control) => {
            return Err(Error::Usage(format!(
                "--service {s:?}: a service name must be non-empty printable text"
            )))
        }
        other => other.clone(),
    };
    let build_args = parse_build_args(&args.build_args, |name| std::env::var(name).ok())?;
    let context_dir = context_dir(&args.context)?;
    let dockerfile = dockerfile(&context_dir, &args.context, args.file.as_deref())?;
    let repository = repository(args, service.as_deref(), &context_dir)?;

    let archive = context::archive(&context_dir, &dockerfile)?;
    let inputs = BuildInputs {
        dockerfile,
        build_args,
    };
    let hash = context::context_hash(&archive.tar, &inputs);
    Ok(Plan {
        context_dir,
        service,
        inputs,
        repository,
        archive,
        hash,
    })
}

/// Parses `--build-arg`s (`NAME=VALUE`, or `NAME` looked up with `env`);
/// a later one for the same name wins, as in the docker CLI.
pub fn parse_build_args(
    raw: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>> {
    let mut args = BTreeMap::new();
    for arg in raw {
        let (name, value) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_owned())),
            None => (arg.as_str(), env(arg)),
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Usage(format!(
                "--build-arg {arg:?}: expected NAME=VALUE (or NAME, taken from the environment), \
                 with a non-empty NAME without spaces"
            )));
        }
        if let Some(value) = value {
            args.insert(name.to_owned(), value);
        }
    }
    Ok(args)
}

/// The context directory, canonical, or a usage error naming it.
fn context_dir(given: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(given).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Usage(format!(
                "context directory {} does not exist",
                given.display()
            ))
        } else {
            Error::Usage(format!(
                "cannot read context directory {}: {e}",
                given.display()
            ))
        }
    })?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "context {} is not a directory",
            given.display()
        )));
    }
    std::fs::canonicalize(given).map_err(|e| {
        Error::Usage(format!(
            "cannot read context directory {}: {e}",
            given.display()
        ))
    })
}

/// The Dockerfile's path inside the context, `/`-separated, resolved as
/// the docker CLI resolves it: `--file` relative to the current directory,
/// symlinks followed, and it must end up inside the context.
fn dockerfile(context_dir: &Path, given_context: &Path, file: Option<&Path>) -> Result<String> {
    let path = match file {
        Some(file) => file.to_path_buf(),
        None => {
            let default = context_dir.join("Dockerfile");
            let lower = context_dir.join("dockerfile");
            if std::fs::symlink_metadata(&default).is_err() && lower.exists() {
                lower
            } else {
                default
            }
        }
    };
    let shown = match file {
        Some(file) => format!("--file {}", file.display()),
        None => format!(
            "no Dockerfile in {}: {}",
            given_context.display(),
            given_context.join("Dockerfile").display()
        ),
    };
    let real = std::fs::canonicalize(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Usage(if file.is_some() {
                format!("{shown}: no such file")
            } else {
                format!("{shown} does not exist")
            })
        } else {
            Error::Usage(format!("cannot read {}: {e}", path.display()))
        }
    })?;
    if !real.is_file() {
        return Err(Error::Usage(format!(
            "{}: the Dockerfile is not a regular file",
            path.display()
        )));
    }
    let rel = real.strip_prefix(context_dir).map_err(|_| {
        Error::Usage(format!(
            "{shown} is outside the context directory {}; the Dockerfile must be inside it",
            given_context.display()
        ))
    })?;
    let parts = rel
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str().map(str::to_owned),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: the Dockerfile's path must be UTF-8",
                path.display()
            ))
        })?;
    Ok(parts.join("/"))
}

/// `--repository` checked, or the default derived from the service or the
/// context directory's name.
fn repository(args: &Args, service: Option<&str>, context_dir: &Path) -> Result<String> {
    if let Some(repo) = &args.repository {
        repository::validate(repo).map_err(|why| {
            Error::Usage(format!(
                "--repository {repo:?} is not a valid repository name: {why}"
            ))
        })?;
        return Ok(repo.clone());
    }
    if let Some(service) = service {
        return repository::sanitise(service).ok_or_else(|| {
            Error::Usage(format!(
                "cannot make a repository name out of --service {service:?}; pass --repository"
            ))
        });
    }
    let name = context_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    repository::sanitise(&name).ok_or_else(|| {
        Error::Usage(format!(
            "cannot make a repository name out of the context directory {}; pass --repository",
            context_dir.display()
        ))
    })
}

/// Runs the step: plan, skip or build, write the record.
pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new(TOOL, args.common.quiet);
    let mut plan = plan(&args)?;
    for path in &plan.archive.skipped {
        progress.warn(format!(
            "{path}: not a file, directory or symlink; left out of the context"
        ));
    }
    let image = plan.image();
    progress.info(format!(
        "context {}: {} entries, {} bytes, {}",
        plan.context_dir.display(),
        plan.archive.entries,
        plan.archive.tar.len(),
        plan.context_hash()
    ));

    let docker = zdd_core::docker::connect().await?;
    let (image_id, built) = match existing(&docker, &image, &plan.context_hash(), &progress).await?
    {
        Some(id) => {
            progress.info(format!("{image} already built, skipping"));
            (id, false)
        }
        None => {
            build(&docker, &mut plan, &progress).await?;
            let id = image_id(&docker, &image).await?;
            progress.info(format!("built {image} ({id})"));
            (id, true)
        }
    };

    let record = ImageRecord {
        service: plan.service.clone(),
        image,
        image_id,
        release: plan.release().to_owned(),
        context_hash: Some(plan.context_hash()),
        built,
        extra: Default::default(),
    };
    RecordWriter::stdout().image(&record)?;
    Ok(Outcome::Success)
}

/// The id of `image` if it exists and was built from `context_hash`.
async fn existing(
    docker: &Docker,
    image: &str,
    context_hash: &str,
    progress: &Progress,
) -> Result<Option<String>> {
    let inspect = match docker.inspect_image(image).await {
        Ok(inspect) => inspect,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(Error::docker(format!("cannot inspect image {image}"), e)),
    };
    let label = inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(labels::CONTEXT_HASH));
    match (label, inspect.id) {
        (Some(label), Some(id)) if label == context_hash => Ok(Some(id)),
        (label, _) => {
            progress.warn(format!(
                "{image} exists but its {} label is {}, not {context_hash}; building it again",
                labels::CONTEXT_HASH,
                label.map_or("missing".to_owned(), |l| format!("{l:?}")),
            ));
            Ok(None)
        }
    }
}

/// Sends the archive to the engine and streams the build log to stderr.
/// A build error is a failed step carrying the engine's message.
async fn build(docker: &Docker, plan: &mut Plan, progress: &Progress) -> Result<()> {
    let image = plan.image();
    let mut image_labels = HashMap::from([(labels::CONTEXT_HASH.to_owned(), plan.context_hash())]);
    if let Some(service) = &plan.service {
        image_labels.insert(labels::BUILT_FOR.to_owned(), service.clone());
    }
    let build_args: HashMap<String, String> = plan.inputs.build_args.clone().into_iter().collect();
    let mut options = BuildImageOptionsBuilder::new()
        .dockerfile(&plan.inputs.dockerfile)
        .t(&image)
        .rm(true)
        .forcerm(true)
        .labels(&image_labels);
    if !build_args.is_empty() {
        options = options.buildargs(&build_args);
    }
    progress.info(format!("building {image} from {}", plan.inputs.dockerfile));

    let tar = std::mem::take(&mut plan.archive.tar);
    let mut stream =
        docker.build_image(options.build(), None, Some(bollard::body_full(tar.into())));
    let mut log = BuildLog::new(*progress);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    log.push(&text);
                }
                if let Some(status) = info.status {
                    log.push(&status);
                    log.push("\n");
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                log.flush();
                return Err(Error::Failed(format!(
                    "building {image} failed: {}",
                    error.trim()
                )));
            }
            Err(e) => {
                log.flush();
                return Err(Error::Failed(format!(
                    "building {image} failed: {}",
                    describe_error(&e)
                )));
            }
        }
    }
    log.flush();
    Ok(())
}

/// The engine's id of `image`, right after building it.
async fn image_id(docker: &Docker, image: &str) -> Result<String> {
    let inspect = docker
        .inspect_image(image)
        .await
        .map_err(|e| Error::docker(format!("cannot inspect the image just built, {image}"), e))?;
    inspect
        .id
        .ok_or_else(|| Error::Failed(format!("the engine reports no id for {image}")))
}

/// The build log arrives in chunks that need not end at line ends; this
/// prints whole lines, each prefixed, blank ones dropped.
struct BuildLog {
    progress: Progress,
    pending: String,
}

impl BuildLog {
    fn new(progress: Progress) -> Self {
        BuildLog {
            progress,
            pending: String::new(),
        }
    }

    fn push(&mut self, text: &str) {
        self.pending.push_str(text);
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            self.emit(&line);
        }
    }

    fn flush(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.emit(&rest);
    }

    fn emit(&self, line: &str) {
        let line = line.trim_end();
        if !line.trim().is_empty() {
            self.progress.info(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once(TOOL).chain(list.iter().copied())).unwrap()
    }

    #[test]
    fn build_args_parse_and_last_wins() {
        let raw: Vec<String> = ["A=1", "B=x=y", "A=2", "EMPTY=", "FROM_ENV", "UNSET"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let env = |name: &str| (name == "FROM_ENV").then(|| "env".to_owned());
        let parsed = parse_build_args(&raw, env).unwrap();
        let want: BTreeMap<String, String> =
            [("A", "2"), ("B", "x=y"), ("EMPTY", ""), ("FROM_ENV", "env")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(parsed, want);
    }

    #[test]
    fn bad_build_args_are_usage_errors_naming_them() {
        for bad in ["=v", "", "A B=1"] {
            let err = parse_build_args(&[bad.to_owned()], |_| None).unwrap_err();
            assert_eq!(err.exit_code(), zdd_core::exit::USAGE);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn repository_defaults() {
        let dir = Path::new("/srv/My Project");
        let a = args(&["--service", "API_v2", "."]);
        assert_eq!(repository(&a, a.service.as_deref(), dir).unwrap(), "api_v2");
        let a = args(&["."]);
        assert_eq!(repository(&a, None, dir).unwrap(), "my-project");
        let a = args(&[
            "--repository",
            "localhost:5000/team/api",
            "--service",
            "x",
            ".",
        ]);
        assert_eq!(
            repository(&a, a.service.as_deref(), dir).unwrap(),
            "localhost:5000/team/api"
        );
        let a = args(&["--repository", "Team/API", "."]);
        let err = repository(&a, None, dir).unwrap_err();
        assert_eq!(err.exit_code(), zdd_core::exit::USAGE);
        assert!(
            err.to_string().contains("--repository \"Team/API\""),
            "{err}"
        );
        let err = repository(&args(&["."]), None, Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("pass --repository"), "{err}");
    }

    #[test]
    fn build_log_prints_whole_lines() {
        let mut log = BuildLog::new(Progress::new(TOOL, true));
        log.push("Step 1/2 : FROM scr");
        assert_eq!(log.pending, "Step 1/2 : FROM scr");
        log.push("atch\n ---> \nStep 2/2");
        assert_eq!(log.pending, "Step 2/2");
        log.flush();
        assert!(log.pending.is_empty());
    }
}
