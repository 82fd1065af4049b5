//! `zdd-ps`: list a service's containers as `container` records.
//!
//! The start of a pipeline that acts on what runs now (retire a release by
//! hand, route what is there) and the way to inspect a service in the same
//! terms every other step uses. Replicas are found by labels (see
//! [`zdd_core::service`]), so a service created by `docker-compose up` is
//! listed as it is, and one-off containers never are.

use clap::Parser;
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::docker;
use zdd_core::jsonl::RecordWriter;
use zdd_core::record::Role;
use zdd_core::service::Service;
use zdd_core::Result;

/// List the containers of a service as JSON Lines `container` records.
#[derive(Debug, Parser)]
#[command(name = "zdd-ps", version, after_help = zdd_core::exit::HELP)]
pub struct Args {
    /// The service: zdd's own replicas (label `zdd.service=SERVICE`), or
    /// with --project that Compose project's service.
    pub service: String,

    /// List this Compose project's service (`com.docker.compose.project`
    /// and `…service`). A name only Compose services have needs it (exit 2
    /// naming the projects). `COMPOSE_PROJECT_NAME` is not read.
    #[arg(long)]
    pub project: Option<String>,

    /// Include containers that are not running.
    #[arg(short, long)]
    pub all: bool,

    /// Stamp every record with this role (`old` to feed `zdd-retire`).
    #[arg(long)]
    pub role: Option<Role>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Lists the service's containers, oldest first.
pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-ps", args.common.quiet);
    let docker = docker::connect().await?;
    let service = Service::resolve(&docker, &args.service, args.project.clone()).await?;
    let containers = service.containers(&docker, args.all).await?;
    let mut out = RecordWriter::stdout();
    for inspect in &containers {
        let mut record = docker::container_record(inspect, &service.name);
        record.role = args.role;
        out.container(&record)?;
    }
    progress.info(format_args!(
        "{} container{} of service `{}`",
        containers.len(),
        if containers.len() == 1 { "" } else { "s" },
        service.name
    ));
    Ok(Outcome::Success)
}
