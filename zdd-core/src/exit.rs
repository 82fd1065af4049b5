//! Exit codes shared by every zdd tool.
//!
//! A pipeline script decides what to do next from these alone, so they are
//! few and they mean the same thing in every tool. Every `--help` repeats
//! them (see [`HELP`]).

/// The step succeeded for every record.
pub const SUCCESS: u8 = 0;

/// The step ran and failed for at least one record (a container never became
/// healthy, a build failed, a retire was refused). The tool still wrote its
/// records, annotated with what failed, so a later step or a rollback can act
/// on them.
pub const STEP_FAILED: u8 = 1;

/// Usage or input error: bad arguments, malformed or incomplete input.
/// Nothing was changed.
pub const USAGE: u8 = 2;

/// The exit-code section appended to every tool's `--help`.
pub const HELP: &str = "\
Exit codes:
  0  the step succeeded for every record
  1  the step failed (records are still written, annotated with the failure)
  2  usage or input error; nothing was changed";
