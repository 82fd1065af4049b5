use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_watch::Args::parse();
    zdd_core::cli::main("zdd-watch", zdd_watch::run(args))
}
