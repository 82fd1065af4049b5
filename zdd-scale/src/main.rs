use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_scale::Args::parse();
    zdd_core::cli::main("zdd-scale", zdd_scale::run(args))
}
