use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_migrate::Args::parse();
    zdd_core::cli::main("zdd-migrate", zdd_migrate::run(args))
}
