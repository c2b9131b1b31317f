//! Errors a hub method returns to its caller.

use std::borrow::Cow;
use std::fmt;

/// The error half of a hub method's result.
///
/// Two kinds, as in the reference server:
/// - [`HubError::new`] is meant for the client (the counterpart of `HubException`): its message
///   always reaches the caller, after the generic text.
/// - Any other error (`?` on an `std::error::Error`) is internal: the caller sees only the
///   generic text, unless detailed errors are enabled on the hub.
///
/// Like `anyhow::Error`, this type does not implement `std::error::Error` itself, so that every
/// error type converts into it with `?`.
pub struct HubError {
    message: String,
    type_name: Cow<'static, str>,
    public: bool,
}

impl HubError {
    /// An error whose message is shown to the client.
    pub fn new(message: impl Into<String>) -> Self {
        HubError {
            message: message.into(),
            type_name: Cow::Borrowed("HubException"),
            public: true,
        }
    }

    /// An internal error: hidden from clients unless detailed errors are enabled.
    pub fn internal(message: impl Into<String>) -> Self {
        HubError {
            message: message.into(),
            type_name: Cow::Borrowed("Error"),
            public: false,
        }
    }

    /// The message (as shown to clients when allowed).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether clients always see the message.
    pub fn is_public(&self) -> bool {
        self.public
    }

    /// `prefix` alone, or `prefix TypeName: message` when the details may be shown.
    pub(crate) fn describe(&self, prefix: &str, detailed: bool) -> String {
        if self.public || detailed {
            format!("{prefix} {}: {}", self.type_name, self.message)
        } else {
            prefix.to_owned()
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HubError {
    fn from(error: E) -> Self {
        let full = std::any::type_name::<E>();
        let short = full
            .split('<')
            .next()
            .and_then(|path| path.rsplit("::").next())
            .unwrap_or(full);
        HubError {
            message: error.to_string(),
            type_name: Cow::Owned(short.to_owned()),
            public: false,
        }
    }
}

impl fmt::Debug for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubError")
            .field("type", &self.type_name)
            .field("message", &self.message)
            .field("public", &self.public)
            .finish()
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
    }
}
