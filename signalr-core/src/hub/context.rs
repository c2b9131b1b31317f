//! The per-call view of a connection that hub methods and hooks receive.

use std::convert::Infallible;
use std::sync::Arc;

use super::clients::{Clients, Groups, HubContext};
use super::error::HubError;
use super::HubShared;
use crate::auth::Identity;
use crate::connection::ConnectionShared;
use crate::protocol::{Close, Protocol};
use crate::request::HttpRequest;
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

    /// The HTTP request the connection was made with (`Context.GetHttpContext()`): headers,
    /// cookies, query string, peer address, and what tower or axum layers attached. `None`
    /// only for connections that had none (the in-process test kit, unless it was given one).
    pub fn http_request(&self) -> Option<&HttpRequest> {
        self.conn.request.as_deref()
    }

    /// The hub's application state of type `S` (see [`HubBuilder::with_state`](crate::HubBuilder::with_state)).
    pub fn state<S: Clone + Send + Sync + 'static>(&self) -> Option<S> {
        self.hub.state.get::<S>().cloned()
    }

    /// Stores a value of type `T` for the rest of this connection (`Context.Items`), replacing
    /// any earlier one of that type; every later call on the connection can read it.
    pub fn insert_item<T: Clone + Send + Sync + 'static>(&self, value: T) {
        self.conn.items().insert(value);
    }

    /// This connection's value of type `T`, if one was stored.
    pub fn item<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.conn.items().get::<T>().cloned()
    }

    /// Takes this connection's value of type `T` out.
    pub fn remove_item<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.conn.items().remove::<T>()
    }
}

/// Types a hub method can take as a context parameter (not bound from the arguments).
///
/// An extractor may refuse: its rejection becomes the invocation's error Completion (a
/// [`HubError::new`] text reaches the caller; any other error shows only with detailed errors),
/// and the method does not run.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be taken from the call context",
    label = "not a context extractor",
    note = "context parameters implement `FromContext` (Context, Clients, Groups, HubContext, State<S>, Item<T>, TypedClients<C>); positional arguments implement `serde::Deserialize`"
)]
pub trait FromContext: Sized {
    /// Why the value could not be made.
    type Rejection: Into<HubError>;
    /// Builds the value for one call.
    fn from_context(context: &Context) -> Result<Self, Self::Rejection>;
}

impl FromContext for Context {
    type Rejection = Infallible;
    fn from_context(context: &Context) -> Result<Self, Infallible> {
        Ok(context.clone())
    }
}

impl FromContext for Clients {
    type Rejection = Infallible;
    fn from_context(context: &Context) -> Result<Self, Infallible> {
        Ok(context.clients())
    }
}

impl FromContext for Groups {
    type Rejection = Infallible;
    fn from_context(context: &Context) -> Result<Self, Infallible> {
        Ok(context.groups())
    }
}

impl FromContext for HubContext {
    type Rejection = Infallible;
    fn from_context(context: &Context) -> Result<Self, Infallible> {
        Ok(context.hub())
    }
}

/// Application state set once with [`HubBuilder::with_state`](crate::HubBuilder::with_state)
/// (a database pool, a configuration), handed to every method that takes it: the shape of
/// axum's `State`. A method asking for a type that was never set fails with an internal
/// error (and an error log line) instead of running.
///
/// ```
/// use signalr_core::{Hub, State};
///
/// #[derive(Clone)]
/// struct App {
///     greeting: String,
/// }
///
/// async fn greet(State(app): State<App>, name: String) -> String {
///     format!("{}, {name}", app.greeting)
/// }
///
/// let hub = Hub::builder()
///     .with_state(App { greeting: "Hello".into() })
///     .method("Greet", greet)
///     .build();
/// # let _ = hub;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S: Clone + Send + Sync + 'static> FromContext for State<S> {
    type Rejection = HubError;
    fn from_context(context: &Context) -> Result<Self, HubError> {
        context.state::<S>().map(State).ok_or_else(|| {
            let type_name = std::any::type_name::<S>();
            tracing::error!(
                connection = %context.connection_id(),
                state = type_name,
                "a method takes state that HubBuilder::with_state never set"
            );
            HubError::internal(format!("no state of type {type_name} was set on the hub"))
        })
    }
}

/// A per-connection value stored earlier with [`Context::insert_item`] (in `on_connected`,
/// or by an earlier call). A method taking it fails with an internal error when none was
/// stored; take `Option<Item<T>>` to make it optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct Item<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromContext for Item<T> {
    type Rejection = HubError;
    fn from_context(context: &Context) -> Result<Self, HubError> {
        context.item::<T>().map(Item).ok_or_else(|| {
            HubError::internal(format!(
                "no item of type {} on this connection",
                std::any::type_name::<T>()
            ))
        })
    }
}

impl<T: Clone + Send + Sync + 'static> FromContext for Option<Item<T>> {
    type Rejection = Infallible;
    fn from_context(context: &Context) -> Result<Self, Infallible> {
        Ok(context.item::<T>().map(Item))
    }
}

/// The connection's HTTP request, as a parameter (see [`Context::http_request`]). A method
/// taking it on a connection without one fails with an internal error.
impl FromContext for HttpRequest {
    type Rejection = HubError;
    fn from_context(context: &Context) -> Result<Self, HubError> {
        context
            .http_request()
            .cloned()
            .ok_or_else(|| HubError::internal("the connection has no HTTP request"))
    }
}
