//! The crate's one public error type, opaque like `hyper::Error`: ask it what happened with the
//! `is_*` predicates instead of matching a sprawling enum.

use std::error::Error as StdError;
use std::fmt;

type Source = Box<dyn StdError + Send + Sync>;

/// An error from the SignalR runtime (sending to clients, serving, encoding).
pub struct Error {
    kind: Kind,
    source: Option<Source>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The connection (or the hub) is closed.
    Closed,
    /// A peer broke the protocol, or a message could not be encoded.
    Protocol,
    /// Something did not happen in time.
    Timeout,
    /// A socket or listener failed.
    Io,
    /// The client answered a client-result invocation with an error.
    Client,
    /// The backplane (other server processes) could not be reached.
    Backplane,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Error { kind, source: None }
    }

    pub(crate) fn with(kind: Kind, source: impl Into<Source>) -> Self {
        Error {
            kind,
            source: Some(source.into()),
        }
    }

    /// The connection or hub was already closed.
    pub fn is_closed(&self) -> bool {
        self.kind == Kind::Closed
    }

    /// A protocol violation or a value that could not be encoded.
    pub fn is_protocol(&self) -> bool {
        self.kind == Kind::Protocol
    }

    /// An operation timed out (for example a send to a client whose queue stayed full).
    pub fn is_timeout(&self) -> bool {
        self.kind == Kind::Timeout
    }

    /// An I/O failure (bind, accept, socket).
    pub fn is_io(&self) -> bool {
        self.kind == Kind::Io
    }

    /// The client answered a client-result invocation with an error (its message is the
    /// error's source).
    pub fn is_client(&self) -> bool {
        self.kind == Kind::Client
    }

    /// The backplane could not carry a message to other server processes (local recipients
    /// were still served).
    pub fn is_backplane(&self) -> bool {
        self.kind == Kind::Backplane
    }

    /// An error a [`Backplane`](crate::backplane::Backplane) implementation reports when it
    /// cannot reach the other processes.
    pub fn backplane(source: impl Into<Source>) -> Self {
        Error::with(Kind::Backplane, source)
    }

    fn description(&self) -> &'static str {
        match self.kind {
            Kind::Closed => "connection closed",
            Kind::Protocol => "protocol error",
            Kind::Timeout => "timed out",
            Kind::Io => "i/o error",
            Kind::Client => "the client returned an error",
            Kind::Backplane => "backplane unavailable",
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("signalr_core::Error");
        d.field(&self.kind);
        if let Some(source) = &self.source {
            d.field(source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.description()),
            None => f.write_str(self.description()),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

impl From<crate::protocol::ProtocolError> for Error {
    fn from(e: crate::protocol::ProtocolError) -> Self {
        Error::with(Kind::Protocol, e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::with(Kind::Io, e)
    }
}
