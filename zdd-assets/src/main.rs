use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_assets::Args::parse();
    zdd_core::cli::main("zdd-assets", zdd_assets::run(args))
}
