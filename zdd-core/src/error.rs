//! One error type for every tool, mapped to the exit codes in [`crate::exit`].
//!
//! The distinction that matters to a caller is whether anything may have
//! changed: usage and input errors are raised before a tool touches the
//! engine (exit 2), everything else is a failed step (exit 1).

use std::fmt;

use crate::exit;

/// Result with the shared [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a tool stopped.
#[derive(Debug)]
pub enum Error {
    /// Bad command-line arguments or files named on it (exit 2).
    Usage(String),
    /// Malformed or incomplete record input (exit 2). `line` is 1-based.
    Input {
        line: Option<usize>,
        message: String,
    },
    /// The Docker engine refused or failed a request (exit 1).
    Docker {
        action: String,
        source: bollard::errors::Error,
    },
    /// The step itself failed (exit 1).
    Failed(String),
    /// Reading input or writing output failed (exit 1).
    Io(std::io::Error),
}

impl Error {
    /// An input error tied to a line of the input.
    pub fn input_at(line: usize, message: impl Into<String>) -> Self {
        Error::Input {
            line: Some(line),
            message: message.into(),
        }
    }

    /// An input error about the input as a whole (empty, no record of a kind).
    pub fn input(message: impl Into<String>) -> Self {
        Error::Input {
            line: None,
            message: message.into(),
        }
    }

    /// A Docker API error, with what we were doing when it happened.
    pub fn docker(action: impl Into<String>, source: bollard::errors::Error) -> Self {
        Error::Docker {
            action: action.into(),
            source,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Input { .. } => exit::USAGE,
            Error::Docker { .. } | Error::Failed(_) | Error::Io(_) => exit::STEP_FAILED,
        }
    }

    /// Whether this is a write to a closed pipe (`zdd-ps | head -1`), which
    /// ends a tool quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Input {
                line: Some(line),
                message,
            } => write!(f, "input line {line}: {message}"),
            Error::Input {
                line: None,
                message,
            } => write!(f, "input: {message}"),
            Error::Docker { action, source } => {
                write!(f, "{action}: {}", crate::docker::describe_error(source))
            }
            Error::Failed(msg) => write!(f, "{msg}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Docker { source, .. } => Some(source),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
