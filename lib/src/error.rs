//! The engine's one error type.
//!
//! Every variant carries what was being done and where (file, object,
//! byte offset), so the tools can print one line that a user can act on.
//! Errors fall into three classes that decide exit status and retries:
//! integrity failures (corrupt input: never retry), usage problems (the
//! caller asked for something impossible) and everything else (runtime,
//! possibly transient).

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a named file or directory.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An I/O error on a stream (stdin, stdout, a pipe).
    #[error("{action}: {source}")]
    Stream {
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// Bytes that do not decode, or whose checksum does not match:
    /// `what` names the stream, file or object, `offset` the first bad byte.
    #[error("{what}: {reason} at byte {offset}")]
    Corrupt {
        what: String,
        offset: u64,
        reason: String,
    },

    /// A chain that does not connect: wrong generation, a txid gap, a
    /// checksum that does not carry over, a final state that does not verify.
    #[error("{what}: {reason}")]
    Integrity { what: String, reason: String },

    /// Input written by a newer litestream-rs.
    #[error("{what}: format version {found} is newer than this build understands ({supported}); upgrade litestream-rs")]
    NewerFormat {
        what: String,
        found: u32,
        supported: u32,
    },

    /// The caller asked for something that cannot be done as asked.
    #[error("{0}")]
    Usage(String),

    /// A database that we cannot work with as it is (not SQLite, not WAL).
    #[error("{}: {reason}", path.display())]
    Database { path: PathBuf, reason: String },

    /// An error reported by SQLite itself.
    #[error("{action} {}: {source}", path.display())]
    Sqlite {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The replica does not hold what was asked for.
    #[error("{0}")]
    NotFound(String),

    /// A remote replica (S3) refused a request or could not be reached:
    /// `object` names the bucket or object (never a credential).
    #[error("{action} {object}: {reason}")]
    Remote {
        action: &'static str,
        object: String,
        reason: String,
        hint: Option<&'static str>,
    },
}

/// What a failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Runtime failure, possibly transient: exit 1, may be retried.
    Runtime,
    /// The request itself is wrong: exit 2.
    Usage,
    /// Corrupt or inconsistent data: exit 3, never retried.
    Integrity,
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Corrupt { .. } | Error::Integrity { .. } | Error::NewerFormat { .. } => {
                ErrorClass::Integrity
            }
            Error::Usage(_) => ErrorClass::Usage,
            _ => ErrorClass::Runtime,
        }
    }

    /// A hint for the user, printed after the error where one helps.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Corrupt { .. } | Error::Integrity { .. } => {
                Some("the data is damaged or from another source; do not trust this replica until `litestream validate` passes")
            }
            Error::Stream { source, .. } if source.kind() == io::ErrorKind::BrokenPipe => {
                Some("the next command in the pipeline exited early; see its error")
            }
            Error::Remote { hint, .. } => *hint,
            _ => None,
        }
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn stream(action: &'static str, source: io::Error) -> Self {
        Error::Stream { action, source }
    }

    pub fn corrupt(what: impl Into<String>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            offset,
            reason: reason.into(),
        }
    }

    pub fn integrity(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Integrity {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub fn database(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Database {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn sqlite(action: &'static str, path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        Error::Sqlite {
            action,
            path: path.into(),
            source,
        }
    }
}
