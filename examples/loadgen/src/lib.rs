//! `zdd-loadgen`: a small HTTP/1.1 load generator for zero-downtime deploy
//! demos, tests and benchmarks.
//!
//! A zero-downtime deploy is proven from outside: keep requests flowing
//! while the deploy runs and show that none failed, and which version
//! answered when. General tools (hey, wrk) are either not precise about
//! *how* a request failed or not installed, and neither can run for
//! exactly as long as a deploy takes. This one can (`--until-file`), counts
//! every way a request can fail by kind, tells the harmless keep-alive
//! race apart from a real failure, and prints a JSON report a test can
//! assert on. It depends on std and libc only, like the example app.
//!
//! # What counts as failed
//!
//! A status outside 2xx, a refused or reset connection, a response cut
//! short, a timeout, or a response that is not HTTP. A request that gets no
//! response byte on a *reused* keep-alive connection is retried once on a
//! new connection and counted as `retried`, not failed, as browsers and
//! HAProxy do: see [`worker`] for why that is sound.
//!
//! # Modules
//!
//! [`config`] reads the command line (and holds [`config::HELP`], which
//! documents the CLI and the JSON report), [`mod@run`] starts the workers and
//! watches the stop conditions, [`worker`] sends requests and classifies
//! what happens, [`http`] parses responses, [`stats`] counts, [`report`]
//! prints, [`json`] writes JSON, and [`sys`] holds the libc calls.

pub mod config;
pub mod http;
pub mod json;
pub mod report;
pub mod run;
pub mod stats;
pub mod sys;
pub mod worker;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use config::{Command, Config, HELP};
use report::Report;

/// Exit code for a bad argument.
const EXIT_USAGE: u8 = 2;

/// Runs the program with the arguments after the program name and returns
/// its exit code: 0 if no request failed, 1 if one did (or the run could
/// not start), 2 for a usage error.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let config = match Command::from_args(args) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("zdd-loadgen: {message}\nRun 'zdd-loadgen --help' for usage.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(error) = sys::install_stop_handlers() {
        eprintln!("zdd-loadgen: cannot install signal handlers: {error}");
        return ExitCode::FAILURE;
    }
    if !config.quiet {
        eprintln!("zdd-loadgen: {}", describe(&config));
    }
    let outcome = match run::run(&config) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("zdd-loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = Report::new(&config, outcome);
    if !config.quiet {
        eprint!("{}", report.summary());
    }
    if config.json {
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = writeln!(stdout, "{}", report.to_json()).and_then(|()| stdout.flush()) {
            eprintln!("zdd-loadgen: cannot write the report: {error}");
            return ExitCode::FAILURE;
        }
    }
    if report.stats().failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One line saying what the run will do, for the start of the output.
fn describe(config: &Config) -> String {
    let mut until = Vec::new();
    if let Some(duration) = config.duration {
        until.push(format!("{:.3}s", duration.as_secs_f64()));
    }
    if let Some(path) = &config.until_file {
        until.push(format!("{} exists", path.display()));
    }
    if let Some(requests) = config.requests {
        until.push(format!("{requests} requests"));
    }
    let rate = match config.rate {
        Some(rate) => format!(", at most {rate} req/s"),
        None => String::new(),
    };
    format!(
        "GET {} from {} workers ({}){rate} until {} or SIGTERM/SIGINT",
        config.url.text,
        config.concurrency,
        config.mode.name(),
        until.join(" or "),
    )
}
