use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zdd_run::history::Args::parse();
    zdd_core::cli::main("zdd-history", async { zdd_run::history::run(args) })
}
