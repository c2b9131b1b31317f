//! The per-call view of a connection that hub methods and hooks receive.

use std::sync::Arc;

use super::clients::{Clients, Groups, HubContext};
use super::HubShared;
use crate::auth::Identity;
use crate::connection::ConnectionShared;
use crate::protocol::{Close, Protocol};
use crate::transport::TransportKind;

/// The calling connection (the counterpart of the reference's `Context`): its id, protocol,
/// and ways to reach clients or close it.
#[derive(Clone)]
pub struct Context {
    pub(crate) conn: Arc<ConnectionShared>,
    pub(crate) hub: Arc<HubShared>,
}

impl Context {
    /// The public connection id (what `Clients::client` takes).
    pub fn connection_id(&self) -> &str {
        &self.conn.id
    }

    /// The hub protocol this client speaks.
    pub fn protocol(&self) -> Protocol {
        self.conn.protocol
    }

    /// Who the caller is, when the hub authenticates (see [`Identity`]).
    pub fn user(&self) -> Option<&Identity> {
        self.conn.identity.as_deref()
    }

    /// The caller's user id: what `Clients::user` targets (the counterpart of
    /// `Context.UserIdentifier`).
    pub fn user_identifier(&self) -> Option<&str> {
        self.conn.user_id.as_deref()
    }

    /// Group membership for this hub.
    pub fn groups(&self) -> Groups {
        Groups {
            hub: self.hub.clone(),
        }
    }

    /// The transport this client connected with.
    pub fn transport(&self) -> TransportKind {
        self.conn.transport
    }

    /// Proxies to reach clients, relative to this caller.
    pub fn clients(&self) -> Clients {
        Clients::new(self.hub.clone(), self.conn.clone())
    }

    /// A handle to the whole hub, usable from other tasks after this call returns.
    pub fn hub(&self) -> HubContext {
        HubContext::new(self.hub.clone())
    }

    /// Closes this connection (the client receives a Close without error, and does not
    /// reconnect automatically).
    pub fn abort(&self) {
        self.conn.close(Close::default());
    }

    /// Whether the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closing()
    }
}

/// Types a hub method can take as a context parameter (not bound from the arguments).
pub trait FromContext: Sized {
    /// Builds the value for one call.
    fn from_context(context: &Context) -> Self;
}

impl FromContext for Context {
    fn from_context(context: &Context) -> Self {
        context.clone()
    }
}

impl FromContext for Clients {
    fn from_context(context: &Context) -> Self {
        context.clients()
    }
}

impl FromContext for Groups {
    fn from_context(context: &Context) -> Self {
        context.groups()
    }
}

impl FromContext for HubContext {
    fn from_context(context: &Context) -> Self {
        context.hub()
    }
}
