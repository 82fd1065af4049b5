use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_run::Args::parse();
    zdd_core::cli::main("zdd-run", zdd_run::run(args))
}
