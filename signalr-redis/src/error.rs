//! The crate's one error type, opaque: ask it what went wrong with its predicates.

use std::error::Error as StdError;
use std::fmt;

type Source = Box<dyn StdError + Send + Sync>;

/// Starting the backplane failed.
pub struct Error {
    kind: Kind,
    source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Config,
    Connect,
}

impl Error {
    pub(crate) fn config(source: impl Into<Source>) -> Self {
        Error {
            kind: Kind::Config,
            source: source.into(),
        }
    }

    pub(crate) fn connect(source: impl Into<Source>) -> Self {
        Error {
            kind: Kind::Connect,
            source: source.into(),
        }
    }

    /// The settings are invalid (for example a malformed Redis URL).
    pub fn is_config(&self) -> bool {
        self.kind == Kind::Config
    }

    /// Redis could not be reached within the connect timeout.
    pub fn is_connect(&self) -> bool {
        self.kind == Kind::Connect
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("signalr_redis::Error")
            .field(&self.kind)
            .field(&self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            Kind::Config => "invalid backplane settings",
            Kind::Connect => "could not connect to Redis",
        };
        write!(f, "{what}: {}", self.source)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source as &(dyn StdError + 'static))
    }
}
