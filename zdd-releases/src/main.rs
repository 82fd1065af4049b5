use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_releases::Args::parse();
    zdd_core::cli::main("zdd-releases", zdd_releases::run(args))
}
