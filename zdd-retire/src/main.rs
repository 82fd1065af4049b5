use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_retire::Args::parse();
    zdd_core::cli::main("zdd-retire", zdd_retire::run(args))
}
