//! `zdd-build`: see the library for what it does and why.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_build::Args::parse();
    zdd_core::cli::main("zdd-build", zdd_build::run(args))
}
