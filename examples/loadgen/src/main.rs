//! Entry point; everything else is in the library so it can be unit-tested.

fn main() -> std::process::ExitCode {
    zdd_loadgen::run(std::env::args_os().skip(1))
}
