use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_health::Args::parse();
    zdd_core::cli::main("zdd-health", zdd_health::run(args))
}
