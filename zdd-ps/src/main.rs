use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_ps::Args::parse();
    zdd_core::cli::main("zdd-ps", zdd_ps::run(args))
}
