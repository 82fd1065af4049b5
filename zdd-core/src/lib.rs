//! The pieces every zdd tool shares.
//!
//! zdd is a set of small programs that each do one step of a deploy and pass
//! JSON Lines records to the next one. Whatever would otherwise be written
//! again in every tool lives here, so that the tools agree on it by
//! construction:
//!
//! - [`record`]: the record types (`image`, `container`) and their fields;
//! - [`jsonl`]: reading a whole input stream strictly (line numbers in every
//!   error, nothing acted on before the input is known to be good) and
//!   writing records one flushed line at a time;
//! - [`docker`]: connecting to the engine (`DOCKER_HOST`, API version
//!   negotiation) and turning a container into a record;
//! - [`service`]: which containers belong to a service (zdd or Compose
//!   labels, never names; one-off containers excluded);
//! - [`evidence`]: the one rule for "the old release may go" and the one
//!   for "a rollback may withdraw the new replicas";
//! - [`error`] and [`exit`]: one error type and the documented exit codes;
//! - [`time`]: UTC timestamps and `user@host`, for records;
//! - [`table`]: the `docker ps`-like tables of `--table`;
//! - [`cli`]: the thin `main` every tool shares (progress on stderr, quiet
//!   broken pipes, error to exit code).

pub mod cli;
pub mod docker;
pub mod duration;
pub mod error;
pub mod evidence;
pub mod exit;
pub mod interrupt;
pub mod jsonl;
pub mod labels;
pub mod names;
pub mod record;
pub mod service;
pub mod table;
pub mod time;

pub use error::{Error, Result};
