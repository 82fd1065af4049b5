//! `zdd-ps`: list a service's containers as `container` records.
//!
//! The start of a pipeline that acts on what runs now (retire a release by
//! hand, route what is there) and the way to inspect a service in the same
//! terms every other step uses. Replicas are found by labels (see
//! [`zdd_core::service`]), so a service created by `docker-compose up` is
//! listed as it is, and one-off containers never are.
//!
//! `--table` is for people: the same containers as a `docker ps`-like
//! table (see [`table`]), so a person, or `zdd-deploy --dry-run`, can see
//! what runs now without jq.

use std::io::{self, Write};

use clap::Parser;
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::docker;
use zdd_core::jsonl::RecordWriter;
use zdd_core::record::{ContainerRecord, Role};
use zdd_core::service::Service;
use zdd_core::table;
use zdd_core::Result;

/// List the containers of a service as JSON Lines `container` records
/// (or, with --table, as a table for people).
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

    /// Print a table for people instead of JSON Lines: a header, then one
    /// row per container with its NAME, RELEASE, STATE and ADDRESS (`-`
    /// when unknown), padded like `docker ps`. Not for other steps to read.
    #[arg(long)]
    pub table: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Lists the service's containers, oldest first.
pub async fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-ps", args.common.quiet);
    let docker = docker::connect().await?;
    let service = Service::resolve(&docker, &args.service, args.project.clone()).await?;
    let containers = service.containers(&docker, args.all).await?;
    let records: Vec<ContainerRecord> = containers
        .iter()
        .map(|inspect| {
            let mut record = docker::container_record(inspect, &service.name);
            record.role = args.role;
            record
        })
        .collect();
    if args.table {
        let mut out = io::stdout();
        out.write_all(table(&records).as_bytes())?;
        out.flush()?;
    } else {
        let mut out = RecordWriter::stdout();
        for record in &records {
            out.container(record)?;
        }
    }
    progress.info(format_args!(
        "{} container{} of service `{}`",
        containers.len(),
        if containers.len() == 1 { "" } else { "s" },
        service.name
    ));
    Ok(Outcome::Success)
}

/// The records as a table for people, like `docker ps`: a header line
/// `NAME RELEASE STATE ADDRESS`, then one line per record, in order. Each
/// column is padded to its widest value plus three spaces; a
/// value the record does not have is `-`, and a container without a name
/// shows its short id. Every line ends with `\n`, none with spaces.
pub fn table(records: &[ContainerRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.label().to_owned(),
                table::or_dash(r.release.as_deref()),
                table::or_dash(r.state.as_deref()),
                table::or_dash(r.address.as_deref()),
            ]
        })
        .collect();
    table::render(&["NAME", "RELEASE", "STATE", "ADDRESS"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str, release: Option<&str>, state: Option<&str>) -> ContainerRecord {
        let mut r = ContainerRecord::new(id, "api");
        r.name = name.into();
        r.release = release.map(Into::into);
        r.state = state.map(Into::into);
        r
    }

    #[test]
    fn the_table_pads_every_column_to_its_widest_value() {
        let mut a = record("aaaa", "api-98d6f5c2-1", Some("98d6f5c2"), Some("running"));
        a.address = Some("172.17.0.4:8080".into());
        let b = record("0123456789abcdef", "", None, Some("exited"));
        assert_eq!(
            table(&[a, b]),
            concat!(
                "NAME             RELEASE    STATE     ADDRESS\n",
                "api-98d6f5c2-1   98d6f5c2   running   172.17.0.4:8080\n",
                "0123456789ab     -          exited    -\n",
            )
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(table(&[]), "NAME   RELEASE   STATE   ADDRESS\n");
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
