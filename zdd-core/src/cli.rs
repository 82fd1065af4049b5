//! What every tool's `main` shares.
//!
//! A tool's `main.rs` parses its arguments and hands its `run` future to
//! [`main`], which owns the runtime, prints the error (prefixed with the
//! tool's name, on stderr) and turns the result into the documented exit
//! code. A closed stdout (`zdd-ps api | head -1`) ends the tool quietly.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use crate::{exit, Result};

/// How a step that ran to the end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The step succeeded for every record (exit 0).
    Success,
    /// The step failed for at least one record; records were written (exit 1).
    StepFailed,
}

impl Outcome {
    /// `Success` if `ok`, else `StepFailed`.
    pub fn from_success(ok: bool) -> Self {
        if ok {
            Outcome::Success
        } else {
            Outcome::StepFailed
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => exit::SUCCESS,
            Outcome::StepFailed => exit::STEP_FAILED,
        }
    }
}

/// Options every tool takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Print no progress on stderr (errors are still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

/// Human progress on stderr, each line prefixed with the tool's name.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    tool: &'static str,
    quiet: bool,
}

impl Progress {
    pub fn new(tool: &'static str, quiet: bool) -> Self {
        Progress { tool, quiet }
    }

    /// A progress line (silenced by `-q`).
    pub fn info(&self, message: impl Display) {
        if !self.quiet {
            eprintln!("{}: {message}", self.tool);
        }
    }

    /// A warning (silenced by `-q`).
    pub fn warn(&self, message: impl Display) {
        if !self.quiet {
            eprintln!("{}: warning: {message}", self.tool);
        }
    }

    /// A failure the step reports before exiting 1 (never silenced).
    pub fn error(&self, message: impl Display) {
        eprintln!("{}: error: {message}", self.tool);
    }

    /// Text the user needs to see whatever `-q` says (a crash log), each
    /// line indented under the tool's prefix.
    pub fn block(&self, title: impl Display, text: &str) {
        eprintln!("{}: {title}", self.tool);
        for line in text.lines() {
            eprintln!("{}: | {line}", self.tool);
        }
    }

    pub fn tool(&self) -> &'static str {
        self.tool
    }
}

/// Runs a tool's future to completion and returns its exit code.
pub fn main(tool: &'static str, run: impl Future<Output = Result<Outcome>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{tool}: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::STEP_FAILED);
        }
    };
    match runtime.block_on(run) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) if e.is_broken_pipe() => ExitCode::from(exit::SUCCESS),
        Err(e) => {
            eprintln!("{tool}: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
