use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_route::Args::parse();
    zdd_core::cli::main("zdd-route", async { zdd_route::run(args) })
}
