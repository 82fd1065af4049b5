//! `zdd-route`: switch an HAProxy backend's traffic from the old replicas
//! to the new ones, through HAProxy's Runtime API, without a reload.
//!
//! This is the step that makes the switch safe to watch rather than safe
//! to hope for. A new replica is routed only when HAProxy's *own* health
//! check reports its server `UP` (zdd-health saw it ready from the host;
//! this confirms the load balancer sees it ready too), and the old replicas
//! are drained only after every new replica is routed, so serving capacity
//! never drops during the switch. A drain waits for the old server's
//! current sessions to reach zero (in-flight requests finish), bounded by
//! its own timeout, separate from the stop grace period of `zdd-retire`.
//!
//! Servers are matched to containers by address (`ip:port`), never by name:
//! a server written in the configuration file, or added by hand or by an
//! earlier run under any name, is adopted as the one for that container.
//! That is also what makes every action idempotent: running the step again
//! finds the server already there, already UP, already drained, already
//! gone, and succeeds.
//!
//! Nothing is changed before the whole input has been checked and the
//! socket and backend have answered, so a bad line, a wrong socket path or
//! a misspelt backend is exit 2 with HAProxy untouched.
//!
//! The shape: `plan` decides what to do with each record, checked whole
//! before anything changes; `router` carries it out in the order that
//! keeps serving capacity up, asking the evidence rule before the old
//! release goes; `proxy` is the one small interface a load balancer
//! implements (`proxy::haproxy`: HAProxy's backend through its Runtime
//! API); [`haproxy`] is the Runtime API client and the parsers of its
//! answers, which zdd-watch uses too, and [`standby`] the backups a watch
//! keeps.

pub mod caddy;
pub mod haproxy;
mod plan;
mod proxy;
mod router;
pub mod standby;

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use zdd_core::cli::{CommonArgs, Outcome, Progress};
use zdd_core::jsonl::{self, RecordWriter};
use zdd_core::{duration, Error, Result};

use crate::caddy::Admin;
use crate::haproxy::{Endpoint, Runtime, RuntimeError};
pub use crate::plan::{plan, sanitize, server_name, Action, Item, Mode};
use crate::proxy::caddy::CaddyHandler;
use crate::proxy::haproxy::HaproxyBackend;
use crate::proxy::Proxy;
use crate::router::{Report, Router};

/// The options a server added with `add server` gets by default. Dynamic
/// servers inherit neither `default-server` nor the defaults a server from
/// the configuration file has, so both are asked for here: the health
/// check, and connection reuse (HAProxy 2.6 gives a dynamic server
/// `pool-purge-delay 0` and no idle pool, so every request would open a
/// new connection to the app: measured at ~25-40% less throughput by
/// scripts/bench-deploy).
///
/// `downinter 100ms` is the interval while a server is down, which is where
/// a freshly added one starts: its first check comes within 100 ms of
/// `enable health` instead of within `inter` (measured: UP after 0.1 s
/// instead of 0.5 s, the route step 0.55 s → 0.13 s). `fastinter 100ms`
/// is the interval while a server is changing state, so a replica that
/// stops answering is taken out 100 ms after its first failed check rather
/// than 500 ms. An UP server is checked every `inter`.
///
/// `weight 100` rather than HAProxy's default 1, so a canary can be given
/// a small share in whole weights without touching the other servers.
///
/// `observe layer4 error-limit 1 on-error mark-down`: a connection the
/// replica refuses (or that times out) marks its server DOWN at once, from
/// live traffic rather than at the next check, so HAProxy's retries go to
/// the servers that answer, and to the [standbys](standby) once every new
/// one is down; a replica that was only briefly unreachable is UP again
/// at its next passing check, within `downinter` (100 ms).
pub const DEFAULT_SERVER_OPTIONS: &str =
    "check inter 500ms downinter 100ms fastinter 100ms fall 2 rise 1 \
     observe layer4 error-limit 1 on-error mark-down \
     pool-purge-delay 5s pool-max-conn -1 weight 100";

/// Extra record field: why routing this container failed.
pub const FIELD_ERROR: &str = "route_error";
/// Extra record field: the drain timeout passed with sessions still open.
pub const FIELD_DRAIN_TIMED_OUT: &str = "drain_timed_out";

/// Route the containers of the input through an HAProxy backend, with its
/// Runtime API (no reload).
///
/// Servers are matched to containers by address (the record's `ip:port`
/// against each server's address and port), so a server already in the
/// backend under any name (from the configuration file, or added by
/// someone else) is adopted.
///
/// Default mode, per container record:
///   role new, health healthy
///       Add a server for it (`add server`, `enable health`, `enable
///       server`), or make the server it has ready; then wait until
///       HAProxy's own check reports it UP: `"routed": true`. Not UP
///       within --up-timeout: `"routed": false`, exit 1; the server is
///       left in the backend for the rollback to remove.
///   role new, not healthy
///       Passed through untouched.
///   role old
///       Only once every new container of the input is healthy and UP
///       (otherwise nothing is drained, exit 1): set its server to drain,
///       wait until its sessions reach 0 or --drain-timeout passes:
///       `"drained": true` (plus `"drain_timed_out": true` after a
///       timeout). An old container without a server, or without an
///       address (not running), has nothing to drain.
///   retired true (any role)
///       Put its server in maintenance and delete it: `"routed": false`.
///       Only a server zdd-route added (named for the container) is
///       deleted; a `server` line of the configuration, a
///       `server-template` slot or anyone else's server at that address
///       stays, in maintenance.
///
/// --sync (input: `zdd-ps SERVICE`), per container record:
///   running (and not unhealthy)
///       As a healthy new one above: added or made ready, confirmed UP.
///   every other server of the backend
///       As with --prune: deleted if zdd-route added it, else kept in
///       maintenance. Run it after HAProxy restarts or reloads (which
///       forgets servers added at runtime), or for a new HAProxy.
///
/// --restore (the rollback), per container record:
///   role old
///       Set its server ready (add it again if it is missing) and wait
///       until it is UP: `"drained": false`, `"routed": true`.
///   role new, started true (this run created it)
///       Once every old server is UP again: drain its server (sessions
///       to 0, or --drain-timeout), then delete it: `"routed": false`.
///       If an old server could not be restored, the new servers stay
///       (exit 1): a rollback never removes the last serving capacity.
///   role new, not started by this run (it served before)
///       Left as it is.
///   retired true
///       Delete its server, as above.
///
/// Through Caddy (--caddy ADMIN --handler ID [--drain-handler ID]) the
/// same, with the upstreams of a `reverse_proxy` handler: a new replica
/// is added (one config change for all) and confirmed in the config read
/// back and accepting connections (Caddy 2.6 has no UP to wait for); an
/// old one is parked in --drain-handler, taken out, and waited for until
/// Caddy counts no request in flight on it; a retired one is taken out of
/// both. No --canary-weight (Caddy 2.6 has no weights). See docs/caddy.md.
///
/// Nothing is changed unless the whole input is valid and the socket
/// (`level admin`) and the backend, or Caddy's admin API and its
/// handlers, answer; otherwise exit 2.
///
/// Every action is idempotent: a server already UP, drained or gone is
/// success. A command HAProxy refuses is reported with the command and
/// HAProxy's answer, on stderr and in the record's `"route_error"`, and the
/// step exits 1. Every input record is written back, in order.
#[derive(Debug, Parser)]
#[command(
    name = "zdd-route",
    version,
    verbatim_doc_comment,
    after_help = zdd_core::exit::HELP
)]
pub struct Args {
    /// HAProxy's Runtime API socket (`stats socket … level admin`): a unix
    /// socket path, or HOST:PORT for a TCP one.
    #[arg(
        long,
        value_name = "SOCKET",
        required_unless_present = "caddy",
        requires = "backend"
    )]
    pub socket: Option<String>,

    /// The HAProxy backend the service's servers are in. It needs a dynamic
    /// balance algorithm (e.g. roundrobin, leastconn) for servers to be
    /// added.
    #[arg(long, value_name = "NAME", value_parser = parse_backend, requires = "socket")]
    pub backend: Option<String>,

    /// Route through Caddy 2 instead: its admin API (`localhost:2019`).
    /// The upstreams of the `reverse_proxy` handler --handler names are
    /// changed, in one config change per action (docs/caddy.md).
    #[arg(
        long,
        value_name = "ADMIN",
        conflicts_with_all = ["socket", "backend", "canary_weight"],
        requires = "handler"
    )]
    pub caddy: Option<String>,

    /// The `@id` of Caddy's `reverse_proxy` handler that serves the
    /// service.
    #[arg(long, value_name = "ID", requires = "caddy")]
    pub handler: Option<String>,

    /// The `@id` of a Caddy `reverse_proxy` handler that no request
    /// reaches: a drained upstream is parked there so that Caddy keeps
    /// counting its requests in flight until they finish. Without it a
    /// drain cannot wait for them (they still finish).
    #[arg(long, value_name = "ID", requires = "caddy")]
    pub drain_handler: Option<String>,

    /// How long a new server may take to be reported UP by HAProxy's check.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse)]
    pub up_timeout: Duration,

    /// How long to wait for an old server's sessions to reach 0.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration::parse)]
    pub drain_timeout: Duration,

    /// Options for the servers this step adds (`add server BE/NAME IP:PORT
    /// OPTIONS`). Dynamic servers ignore `default-server`; keep `check` so
    /// HAProxy confirms each new server UP.
    #[arg(
        long,
        value_name = "OPTIONS",
        default_value = DEFAULT_SERVER_OPTIONS,
        value_parser = parse_server_options,
        allow_hyphen_values = true
    )]
    pub server_options: String,

    /// Roll back: make the old servers ready again, remove the new ones.
    #[arg(long)]
    pub restore: bool,

    /// Make the backend hold exactly the service's running replicas (the
    /// input: `zdd-ps SERVICE` records): each running one is added or made
    /// ready and confirmed UP, every other server is deleted (or, one of
    /// the configuration, put in maintenance). A server that serves is not
    /// disturbed. For HAProxy after a restart or reload, which forgets the
    /// servers added at runtime, or for a new HAProxy.
    #[arg(long, conflicts_with_all = ["restore", "prune"])]
    pub sync: bool,

    /// A canary: route the new servers at this share of the backend's
    /// traffic (`10%`; from the weights of the servers already serving,
    /// which are not changed) and drain nothing. The next routing step
    /// without it gives them their full weight again.
    #[arg(
        long,
        value_name = "PERCENT",
        value_parser = parse_percent,
        conflicts_with_all = ["restore", "prune", "sync"]
    )]
    pub canary_weight: Option<u8>,

    /// The backend serves this service alone and the input lists all its
    /// containers: after routing, delete every server whose address is no
    /// live (not retired) container of the input. Converges a backend
    /// that a killed deploy left with stale servers.
    #[arg(long, conflicts_with = "restore")]
    pub prune: bool,

    /// Only check that the proxy answers (HAProxy's socket at `level
    /// admin` and its backend, or Caddy's admin API and its handlers), and
    /// exit: 0, or 2 naming the problem. Reads no input. zdd-deploy runs it
    /// before anything changes.
    #[arg(long, conflicts_with_all = ["restore", "sync", "prune", "canary_weight"])]
    pub check: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

fn parse_backend(text: &str) -> std::result::Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if text.is_empty() || !text.chars().all(valid) {
        return Err(format!(
            "`{text}` is not an HAProxy backend name (letters, digits, `-`, `_`, `.`, `:`)"
        ));
    }
    Ok(text.to_owned())
}

fn parse_percent(text: &str) -> std::result::Result<u8, String> {
    let number = text.strip_suffix('%').unwrap_or(text);
    match number.parse::<u8>() {
        Ok(p) if (1..=99).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a share of 1% to 99%")),
    }
}

fn parse_server_options(text: &str) -> std::result::Result<String, String> {
    if text.contains(|c: char| c == ';' || c.is_control()) {
        return Err("server options may not contain `;` or control characters".into());
    }
    Ok(text.trim().to_owned())
}

/// Reads the records, checks the socket and backend, routes, writes the
/// records back.
///
/// Synchronous: the Runtime API is one short request at a time on a local
/// socket, and the waits are polls of it (`show stat` every 50 ms), so
/// nothing here is worth an async runtime's overlap.
pub fn run(args: Args) -> Result<Outcome> {
    let progress = Progress::new("zdd-route", args.common.quiet);
    if args.check {
        connect(&args, progress)?;
        return Ok(Outcome::Success);
    }
    let records = jsonl::read_stdin()?;
    let containers = jsonl::require_containers(&records, "zdd-health")?;
    let mode = match (args.restore, args.sync) {
        (true, _) => Mode::Restore,
        (_, true) => Mode::Sync,
        _ => Mode::Deploy,
    };
    let items = plan(&records, &containers, mode)?;

    let report = match connect(&args, progress)? {
        Connected::Haproxy(proxy) => route(proxy, &args, progress, &items, &containers),
        Connected::Caddy(proxy) => route(proxy, &args, progress, &items, &containers),
    };
    RecordWriter::stdout().containers_updated(&records, &report.updated)?;
    Ok(Outcome::from_success(report.ok))
}

/// The proxy the command line names, once it has answered.
enum Connected {
    Haproxy(HaproxyBackend),
    Caddy(CaddyHandler),
}

/// Checks that the proxy answers (the preflight of each) and sets it up
/// for routing; every failure is a usage error.
fn connect(args: &Args, progress: Progress) -> Result<Connected> {
    match (&args.socket, &args.backend, &args.caddy, &args.handler) {
        (Some(socket), Some(backend), _, _) => {
            let runtime = Runtime::new(Endpoint::parse(socket));
            preflight(&runtime, backend)?;
            Ok(Connected::Haproxy(HaproxyBackend {
                runtime,
                backend: backend.clone(),
                server_options: args.server_options.clone(),
                up_timeout: args.up_timeout,
                drain_timeout: args.drain_timeout,
                weight: "weight 100%".into(),
                progress,
            }))
        }
        (_, _, Some(caddy), Some(handler)) => {
            let admin = caddy_preflight(caddy, handler, args.drain_handler.as_deref())?;
            proxy::caddy::warn_without_request_migration(&progress);
            Ok(Connected::Caddy(CaddyHandler {
                admin,
                handler: handler.clone(),
                parking: args.drain_handler.clone(),
                up_timeout: args.up_timeout,
                drain_timeout: args.drain_timeout,
                progress,
            }))
        }
        _ => Err(Error::Usage(
            "say which proxy: --socket and --backend (HAProxy), or --caddy and --handler".into(),
        )),
    }
}

/// The run through one proxy: the same order whatever it is.
fn route<P: Proxy>(
    proxy: P,
    args: &Args,
    progress: Progress,
    items: &[Item],
    containers: &[(usize, zdd_core::record::ContainerRecord)],
) -> Report {
    let router = Router {
        proxy,
        prune: args.prune || args.sync,
        canary_weight: args.canary_weight,
        progress,
        report: Report {
            updated: HashMap::new(),
            ok: true,
        },
    };
    if args.restore {
        router.restore(items, containers)
    } else {
        router.deploy(items, containers)
    }
}

/// Checks, before anything changes, that Caddy's admin API answers and
/// has the handlers, each a `reverse_proxy`. Every failure is a usage
/// error.
fn caddy_preflight(endpoint: &str, handler: &str, parking: Option<&str>) -> Result<Admin> {
    let usage =
        |e: caddy::AdminError| Error::Usage(format!("Caddy's admin API at {endpoint}: {e}"));
    let admin = Admin::new(endpoint).map_err(usage)?;
    for id in std::iter::once(handler).chain(parking) {
        admin.handler(id).map_err(usage)?;
    }
    Ok(admin)
}

/// Checks, before anything changes, that the socket answers with admin
/// rights and that the backend exists. Every failure is a usage error.
pub fn preflight(runtime: &Runtime, backend: &str) -> Result<()> {
    let endpoint = runtime.endpoint().clone();
    let usage = |e: RuntimeError| match e {
        RuntimeError::Connect { .. } => Error::Usage(e.to_string()),
        RuntimeError::NoSuchBackend { backend } => Error::Usage(format!(
            "HAProxy (Runtime API at {endpoint}) has no backend `{backend}`"
        )),
        other => Error::Usage(format!(
            "checking the HAProxy Runtime API at {endpoint}: {other}"
        )),
    };
    match runtime.cli_level().map_err(usage)? {
        Some(level) if level != "admin" => {
            return Err(Error::Usage(format!(
                "the HAProxy Runtime API at {endpoint} is at level `{level}`; zdd-route needs `level admin` on its `stats socket` line"
            )))
        }
        _ => {}
    }
    runtime.servers_state(backend).map_err(usage)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_and_server_options_are_checked() {
        assert!(parse_backend("web_api.v2").is_ok());
        assert!(parse_backend("web api").is_err());
        assert!(parse_backend("web/x").is_err());
        assert!(parse_backend("").is_err());
        assert_eq!(
            parse_server_options(" check inter 1s ").unwrap(),
            "check inter 1s"
        );
        assert!(parse_server_options("check; shutdown frontend fe").is_err());
        assert!(parse_server_options("check\ninter 1s").is_err());
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
