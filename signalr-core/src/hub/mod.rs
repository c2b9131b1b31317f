//! Hubs: the method table, connection hooks, and the handles used to reach clients.

pub(crate) mod clients;
mod context;
pub(crate) mod dispatch;
mod error;
mod filter;
mod handler;
pub(crate) mod streams;
mod typed;

use rustc_hash::FxHashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

pub use clients::{ClientProxy, Clients, Groups, HubClients, HubContext, IntoArguments, Presence};
pub use context::{Context, FromContext, Item, State};
pub use error::HubError;
pub use filter::{
    filter_fn, BoxFuture, ConnectNext, DisconnectNext, HubFilter, HubInvocation, InvocationOutcome,
    InvokeNext, Next,
};
pub use handler::{
    BindError, FromInvocation, Handler, IntoCompletion, IntoHookResult, InvocationParts,
    ParameterKind, ViaArgument, ViaContext, ViaPayload, ViaResult, ViaStream, ViaTryStream,
    ViaTryStreamResult, ViaUpload, ViaValue,
};
pub use streams::{Cancellation, UploadStream};
pub use typed::{ClientMessage, TypedClientProxy, TypedClients, TypedHubContext};

use crate::auth::{Authenticator, Identity, Policy};
use crate::connection::{
    Config as ConnectionConfig, ConnectionHost, ConnectionShared, Counters, CLOSED_WITH_ERROR,
};
use crate::http::connections::HttpConnections;
use crate::http::HubService;
use crate::lifetime::backplane::{Backplane, ConnectionInfo, LocalHub};
use crate::lifetime::ConnectionRegistry;
use crate::options::HubOptions;
use crate::protocol::{Close, Protocol};
use crate::transport::TransportKind;
use dispatch::Dispatcher;

tokio::task_local! {
    /// Set while a connection's on_connected hook (and its filters) runs: as in the reference,
    /// client results cannot be asked for from there, since the connection reads nothing until
    /// the hook returns. Code elsewhere may ask a connection still in its hook; the answer is
    /// read once the hook is done.
    pub(crate) static IN_ON_CONNECTED: ();
}
use filter::{connect_chain, disconnect_chain, Filters};
use handler::{ErasedHandler, HandlerFn};

type Hook =
    Arc<dyn Fn(Context, Option<String>) -> BoxFuture<'static, Result<(), HubError>> + Send + Sync>;

/// A hub: a set of methods clients can call, plus connection hooks. Cheap to clone.
///
/// ```no_run
/// use signalr_core::{Clients, Hub};
///
/// async fn echo(message: String) -> String {
///     message
/// }
///
/// async fn broadcast(clients: Clients, message: String) -> Result<(), signalr_core::HubError> {
///     clients.all().send("Receive", (message,)).await?;
///     Ok(())
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let hub = Hub::builder()
///     .method("Echo", echo)
///     .method("Broadcast", broadcast)
///     .build();
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
/// signalr_core::serve(listener, "/hub", hub).await
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubShared>,
}

impl Hub {
    /// Starts describing a hub.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// The HTTP side of the hub as a `tower::Service`, to mount at any path of an axum
    /// `Router` (`nest_service`) or to serve with plain hyper.
    pub fn service(&self) -> HubService {
        HubService::new(self.shared.clone(), None)
    }

    /// The same hub as another endpoint with its own options (transports), for mounting it
    /// at several paths: every endpoint shares one registry, its groups and one
    /// [`HubContext`]; a client negotiated at one path uses that path's transports.
    pub fn service_with(&self, options: crate::http::EndpointOptions) -> HubService {
        HubService::new(self.shared.clone(), Some(options))
    }

    #[cfg(feature = "test-util")]
    pub(crate) fn shared(&self) -> &Arc<HubShared> {
        &self.shared
    }

    /// A handle to push messages to clients from outside hub methods.
    pub fn context(&self) -> HubContext {
        HubContext::new(self.shared.clone())
    }

    /// The hub's options, as built.
    pub fn options(&self) -> &HubOptions {
        &self.shared.options
    }

    /// How many connections are open right now (on this process).
    pub fn connection_count(&self) -> usize {
        self.shared.registry.len()
    }

    /// How many connections this hub has closed because the client read slower than the hub
    /// wrote to it (its outbound queue stayed full: [`HubOptions::outbound_queue_capacity`],
    /// [`HubOptions::send_timeout`]). Each such close is also logged once, at warn.
    pub fn slow_client_closes(&self) -> u64 {
        self.shared
            .counters
            .slow_client_closes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Graceful shutdown: refuses new connections, sends every client a Close message with
    /// `allowReconnect: true` (so clients with automatic reconnect come back to another
    /// instance), lets queued messages drain, and waits for the connections to end (at most
    /// the shutdown timeout).
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.shutting_down.cancel();
        shared.registry.for_each(|conn| {
            conn.close(Close {
                error: None,
                allow_reconnect: true,
            })
        });
        let mut count = shared.registry.watch_count();
        let _ = tokio::time::timeout(shared.options.shutdown_timeout, count.wait_for(|n| *n == 0))
            .await;
    }
}

/// Builds a [`Hub`]: methods, hooks and options (defaults as in ASP.NET Core SignalR).
#[derive(Default)]
pub struct HubBuilder {
    methods: Vec<(String, Method)>,
    on_connected: Option<Hook>,
    on_disconnected: Option<Hook>,
    options: HubOptions,
    authenticator: Option<Arc<dyn Authenticator>>,
    hub_policy: Option<Policy>,
    user_id_provider: Option<UserIdProvider>,
    filters: Vec<Arc<dyn HubFilter>>,
    backplane: Option<Arc<dyn Backplane>>,
    state: http::Extensions,
    raw: Option<crate::raw::RawHandler>,
    cors: Option<tower_http::cors::CorsLayer>,
}

type UserIdProvider = Arc<dyn Fn(&Identity) -> Option<String> + Send + Sync>;

/// A registered hub method: its handler and who may call it.
#[derive(Clone)]
pub(crate) struct Method {
    /// The name it was registered under (clients may spell it in any case): what logs and
    /// metrics call it.
    pub(crate) name: Arc<str>,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) policy: Option<Policy>,
}

impl HubBuilder {
    /// Registers `handler` as the hub method `name`. Clients' method names match
    /// case-insensitively, as in the reference server.
    ///
    /// # Panics
    /// When another method already has the same name, ignoring case (a programming error,
    /// caught at start-up).
    pub fn method<H, T>(self, name: &str, handler: H) -> Self
    where
        H: Handler<T>,
        T: 'static,
    {
        self.add_method(name, handler, None)
    }

    /// Registers a method that only callers satisfying `policy` may invoke; others get the
    /// reference's error Completion (`Failed to invoke 'X' because user is unauthorized`) and
    /// the method does not run.
    pub fn authorized_method<H, T>(self, name: &str, policy: Policy, handler: H) -> Self
    where
        H: Handler<T>,
        T: 'static,
    {
        self.add_method(name, handler, Some(policy))
    }

    fn add_method<H, T>(mut self, name: &str, handler: H, policy: Option<Policy>) -> Self
    where
        H: Handler<T>,
        T: 'static,
    {
        let folded = name.to_lowercase();
        assert!(
            !self.methods.iter().any(|(n, _)| n.to_lowercase() == folded),
            "hub method '{name}' is registered twice (names are case-insensitive)"
        );
        let handler = HandlerFn {
            handler,
            _marker: std::marker::PhantomData,
        };
        let method = Method {
            name: name.into(),
            handler: Arc::new(handler),
            policy,
        };
        self.methods.push((name.to_owned(), method));
        self
    }

    /// A CORS policy of the application's own (tower-http's `CorsLayer`), instead of the one
    /// [`cors_allowed_origins`](Self::cors_allowed_origins) builds: the same value can guard
    /// the application's REST routes, so one policy covers both. Remember what SignalR
    /// clients need across origins: credentials (the JS client sends cookies), `GET`, `POST`
    /// and `DELETE`, and the `authorization`, `content-type`, `x-requested-with` and
    /// `x-signalr-user-agent` headers.
    pub fn cors(mut self, layer: tower_http::cors::CorsLayer) -> Self {
        self.cors = Some(layer);
        self
    }

    /// Makes this a raw connection endpoint ([`ConnectionHandler`](crate::ConnectionHandler)).
    pub(crate) fn raw_handler(mut self, handler: crate::raw::RawHandler) -> Self {
        self.raw = Some(handler);
        self
    }

    /// Sets every option at once (see [`HubOptions`] for each one and its default). A key set
    /// with [`portable_connection_tokens`](Self::portable_connection_tokens) is kept.
    pub fn options(mut self, mut options: HubOptions) -> Self {
        options.portable_token_key = self.options.portable_token_key.take();
        assert!(
            !options.protocols.is_empty(),
            "a hub needs at least one protocol"
        );
        assert!(
            !options.transports.is_empty(),
            "a hub needs at least one transport"
        );
        self.options = options;
        self
    }

    /// Sets application state (a database pool, configuration) that every method can take
    /// as a [`State<S>`] parameter, and hooks and other code can read with
    /// [`Context::state`] and [`HubContext::state`]. One value per type; several types may be
    /// set. The value is cloned for each call that takes it, so wrap large state in an `Arc`.
    pub fn with_state<S: Clone + Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state.insert(state);
        self
    }

    /// Adds a filter around every invocation and connection hook (see [`HubFilter`]). Filters
    /// run in the order added, the first outermost.
    pub fn filter(mut self, filter: impl HubFilter) -> Self {
        self.filters.push(Arc::new(filter));
        self
    }

    /// Items buffered per upload stream; past it the server stops reading from that client until
    /// the method consumes (`StreamBufferCapacity`). The default is documented on
    /// [`HubOptions::stream_buffer_capacity`].
    pub fn stream_buffer_capacity(mut self, items: usize) -> Self {
        self.options.stream_buffer_capacity = items.max(1);
        self
    }

    /// How long [`ClientProxy::invoke`] waits for a client's result before failing with a timeout.
    /// The default is documented on [`HubOptions::client_result_timeout`].
    pub fn client_result_timeout(mut self, timeout: Duration) -> Self {
        self.options.client_result_timeout = timeout;
        self
    }

    /// Offer stateful reconnect to clients that ask for it (`withStatefulReconnect()`), over
    /// WebSockets: when a client's socket drops, its connection (id, groups, user, running
    /// invocations and streams) waits for it for the disconnect timeout, and on its return every
    /// message it missed is replayed, with nothing lost or duplicated in either direction. The
    /// default is documented on [`HubOptions::allow_stateful_reconnect`].
    pub fn allow_stateful_reconnect(mut self, allowed: bool) -> Self {
        self.options.allow_stateful_reconnect = allowed;
        self
    }

    /// Bytes of sent messages kept until the client acknowledges them, for replay after a
    /// reconnect. Past it, sends to that client wait for its acknowledgements (the queue then fills
    /// and slow-client handling applies). The default is documented on
    /// [`HubOptions::stateful_reconnect_buffer_size`].
    pub fn stateful_reconnect_buffer_size(mut self, bytes: usize) -> Self {
        self.options.stateful_reconnect_buffer_size = bytes.max(1);
        self
    }

    /// Authenticates every negotiate and transport request (see [`Authenticator`]); a refusal
    /// answers 401. Without one, every connection is anonymous.
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Requires `policy` of every caller, at negotiate and at each transport request
    /// (the counterpart of `[Authorize]` on a hub): anonymous callers get 401, authenticated
    /// ones that fail the policy 403.
    pub fn require(mut self, policy: Policy) -> Self {
        self.hub_policy = Some(policy);
        self
    }

    /// How a connection's user id (what `Clients::user` targets) comes from its identity.
    /// Default: [`Identity::user_id`], the counterpart of the `nameidentifier` claim.
    pub fn user_id_provider(
        mut self,
        provider: impl Fn(&Identity) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.user_id_provider = Some(Arc::new(provider));
        self
    }

    /// Close a connection when its identity's credentials expire ([`Identity::expires_at`]), with a
    /// Close carrying the reason and allowing reconnection (so the client returns with a fresh
    /// token). The default is documented on [`HubOptions::close_on_authentication_expiration`].
    pub fn close_on_authentication_expiration(mut self, enabled: bool) -> Self {
        self.options.close_on_authentication_expiration = enabled;
        self
    }

    /// Runs after a client's handshake, before its messages are read. An error closes the
    /// connection with a Close message that does not allow reconnecting.
    pub fn on_connected<F, Fut, R>(mut self, hook: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
        R: IntoHookResult,
    {
        self.on_connected = Some(Arc::new(move |ctx, _| {
            let fut = hook(ctx);
            Box::pin(async move { fut.await.into_hook_result() })
        }));
        self
    }

    /// Runs once after a connection ended, with the error that ended it (`None` when it ended
    /// gracefully).
    pub fn on_disconnected<F, Fut, R>(mut self, hook: F) -> Self
    where
        F: Fn(Context, Option<String>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
        R: IntoHookResult,
    {
        self.on_disconnected = Some(Arc::new(move |ctx, error| {
            let fut = hook(ctx, error);
            Box::pin(async move { fut.await.into_hook_result() })
        }));
        self
    }

    /// Time a client has to complete the handshake. The default is documented on
    /// [`HubOptions::handshake_timeout`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.options.handshake_timeout = timeout;
        self
    }

    /// Interval of server pings on an idle connection. The default is documented on
    /// [`HubOptions::keep_alive_interval`].
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.options.keep_alive_interval = interval;
        self
    }

    /// Close a client that sends nothing (not even a ping) for this long. The default is documented
    /// on [`HubOptions::client_timeout`].
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.options.client_timeout = timeout;
        self
    }

    /// Largest message a client may send, in bytes; past it the connection is closed with an error.
    /// The default is documented on [`HubOptions::max_receive_message_size`].
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.options.max_receive_message_size = bytes;
        self
    }

    /// Show error details (error types and messages) to clients. The default is documented on
    /// [`HubOptions::enable_detailed_errors`].
    pub fn enable_detailed_errors(mut self, enabled: bool) -> Self {
        self.options.enable_detailed_errors = enabled;
        self
    }

    /// Non-streaming invocations one client may have running at once; while all are busy the server
    /// stops reading from that client. The default is documented on
    /// [`HubOptions::max_parallel_invocations`].
    pub fn max_parallel_invocations(mut self, limit: usize) -> Self {
        self.options.max_parallel_invocations = limit.max(1);
        self
    }

    /// Records that may wait in one connection's outbound queue; a client whose queue is full when
    /// a multi-client send arrives is closed as too slow. The default is documented on
    /// [`HubOptions::outbound_queue_capacity`].
    pub fn outbound_queue_capacity(mut self, records: usize) -> Self {
        self.options.outbound_queue_capacity = records.max(1);
        self
    }

    /// How long a send to a single client waits for queue space before that client is closed as too
    /// slow. The default is documented on [`HubOptions::send_timeout`].
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.options.send_timeout = timeout;
        self
    }

    /// How long a negotiated connection may wait for its transport. The default is documented on
    /// [`HubOptions::disconnect_timeout`].
    pub fn disconnect_timeout(mut self, timeout: Duration) -> Self {
        self.options.disconnect_timeout = timeout;
        self
    }

    /// How long [`Hub::shutdown`] waits for clients to leave. The default is documented on
    /// [`HubOptions::shutdown_timeout`].
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.options.shutdown_timeout = timeout;
        self
    }

    /// The hub protocols offered to clients. The default is documented on
    /// [`HubOptions::protocols`].
    ///
    /// # Panics
    /// When `protocols` is empty.
    pub fn protocols(mut self, protocols: impl IntoIterator<Item = Protocol>) -> Self {
        let protocols: Vec<Protocol> = protocols.into_iter().collect();
        assert!(!protocols.is_empty(), "a hub needs at least one protocol");
        self.options.protocols = protocols;
        self
    }

    /// The transports offered and served. A request for a transport left out gets 404, as in the
    /// reference. The default is documented on [`HubOptions::transports`].
    ///
    /// # Panics
    /// When `transports` is empty.
    pub fn transports(mut self, transports: impl IntoIterator<Item = TransportKind>) -> Self {
        let transports: Vec<TransportKind> = transports.into_iter().collect();
        assert!(!transports.is_empty(), "a hub needs at least one transport");
        self.options.transports = transports;
        self
    }

    /// How long a long poll waits for data before answering empty (the client then polls again).
    /// The default is documented on [`HubOptions::long_poll_timeout`].
    pub fn long_poll_timeout(mut self, timeout: Duration) -> Self {
        self.options.long_poll_timeout = timeout;
        self
    }

    /// Origins allowed to connect from browsers on other sites (CORS with credentials, as the JS
    /// client sends them). `"*"` allows any origin. The default is documented on
    /// [`HubOptions::cors_origins`].
    pub fn cors_allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.cors_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Negotiated connections that may wait for their transport at once; past it negotiate answers
    /// 503 (a flood of negotiations cannot grow memory without bound). The default is documented on
    /// [`HubOptions::max_pending_negotiations`].
    pub fn max_pending_negotiations(mut self, limit: usize) -> Self {
        self.options.max_pending_negotiations = limit;
        self
    }

    /// The most a WebSocket read takes at once, in bytes (at least 256). Default 4 KiB. See
    /// [`HubOptions::websocket_read_buffer_size`].
    pub fn websocket_read_buffer_size(mut self, bytes: usize) -> Self {
        self.options.websocket_read_buffer_size = bytes.max(256);
        self
    }

    /// Signs connection tokens with `key` (shared by every process of the hub, at least 16
    /// bytes of secret), so that a connection negotiated on one process can open on another:
    /// behind a load balancer without session affinity, a client's negotiate and its WebSocket
    /// request may land on different processes. A process adopts a token it did not issue only
    /// within 60 s of its issue and only if no process already holds that connection.
    /// Negotiate version 0 clients (pre-2020) keep process-bound tokens. Default off: tokens
    /// are random and valid on the negotiating process only, as in the reference.
    ///
    /// # Panics
    /// When `key` is shorter than 16 bytes.
    pub fn portable_connection_tokens(mut self, key: impl AsRef<[u8]>) -> Self {
        let key = key.as_ref();
        assert!(
            key.len() >= 16,
            "a connection token key needs at least 16 bytes"
        );
        self.options.portable_token_key = Some(key.into());
        self
    }

    /// Connects this hub to other server processes through a backplane (such as
    /// `signalr_redis::RedisBackplane`), so that sends, groups, users, client results and
    /// presence span every process. Without one, the hub covers this process only.
    pub fn backplane(mut self, backplane: impl Backplane) -> Self {
        self.backplane = Some(Arc::new(backplane));
        self
    }

    /// Finishes the hub.
    pub fn build(self) -> Hub {
        let mut exact = FxHashMap::default();
        let mut folded = FxHashMap::default();
        for (name, handler) in self.methods {
            folded.insert(name.to_lowercase(), handler.clone());
            exact.insert(name, handler);
        }
        let cors = self
            .cors
            .or_else(|| crate::http::cors::layer_for(&self.options.cors_origins));
        let counters = Arc::new(Counters::default());
        let hub = Hub {
            shared: Arc::new(HubShared {
                counters: counters.clone(),
                connection_configs: TransportKind::ALL.map(|transport| {
                    Arc::new(ConnectionConfig::new(
                        &self.options,
                        transport,
                        counters.clone(),
                    ))
                }),
                options: self.options,
                methods: Methods { exact, folded },
                on_connected: self.on_connected,
                on_disconnected: self.on_disconnected,
                authenticator: self.authenticator,
                hub_policy: self.hub_policy,
                user_id_provider: self.user_id_provider,
                filters: self.filters.into(),
                next_result_id: AtomicU64::new(0),
                registry: ConnectionRegistry::new(),
                connections: HttpConnections::default(),
                shutting_down: CancellationToken::new(),
                backplane: self.backplane,
                state: self.state,
                cors,
                raw: self.raw,
            }),
        };
        if let Some(backplane) = &hub.shared.backplane {
            backplane.attach(LocalHub::new(&hub.shared));
        }
        hub
    }
}

/// The method table: exact names first (no allocation), then case-folded. Looked up once per
/// invocation with a name the client chose, never grown by one, hence FxHash.
pub(crate) struct Methods {
    exact: FxHashMap<String, Method>,
    folded: FxHashMap<String, Method>,
}

impl Methods {
    pub(crate) fn get(&self, name: &str) -> Option<&Method> {
        self.exact
            .get(name)
            .or_else(|| self.folded.get(&name.to_lowercase()))
    }
}

/// Everything the HTTP layer, connections and handles share about one hub.
pub(crate) struct HubShared {
    pub(crate) options: HubOptions,
    /// The connection state machine's settings, one per transport, derived from `options`.
    connection_configs: [Arc<ConnectionConfig>; 3],
    counters: Arc<Counters>,
    pub(crate) methods: Methods,
    on_connected: Option<Hook>,
    on_disconnected: Option<Hook>,
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) hub_policy: Option<Policy>,
    user_id_provider: Option<UserIdProvider>,
    pub(crate) filters: Filters,
    /// Numbers the server's client-result invocations (`s0`, `s1`, ...).
    pub(crate) next_result_id: AtomicU64,
    pub(crate) registry: ConnectionRegistry,
    /// Connection tokens issued by negotiate (and skip-negotiation WebSockets), by token.
    pub(crate) connections: HttpConnections,
    pub(crate) shutting_down: CancellationToken,
    /// Other processes of the same hub, when scaled out.
    pub(crate) backplane: Option<Arc<dyn Backplane>>,
    /// Application state, by type (`HubBuilder::with_state`).
    pub(crate) state: http::Extensions,
    /// Set for a raw connection endpoint: its transports run this instead of the hub.
    pub(crate) raw: Option<crate::raw::RawHandler>,
    /// The CORS policy in front of every endpoint of the hub.
    pub(crate) cors: Option<tower_http::cors::CorsLayer>,
}

impl HubShared {
    /// Adds a local connection to a group; false when the connection is not here.
    pub(crate) async fn add_local_to_group(&self, connection_id: &str, group: &str) -> bool {
        match self.registry.add_to_group(connection_id, group) {
            None => false,
            Some(newly_joined) => {
                if let (true, Some(backplane)) = (newly_joined, &self.backplane) {
                    backplane.group_joined(connection_id, group).await;
                }
                true
            }
        }
    }

    /// Removes a local connection from a group; false when the connection is not here.
    pub(crate) fn remove_local_from_group(&self, connection_id: &str, group: &str) -> bool {
        match self.registry.remove_from_group(connection_id, group) {
            None => false,
            Some(was_member) => {
                if let (true, Some(backplane)) = (was_member, &self.backplane) {
                    backplane.group_left(connection_id, group);
                }
                true
            }
        }
    }

    fn context(self: &Arc<Self>, conn: &Arc<ConnectionShared>) -> Context {
        Context {
            conn: conn.clone(),
            hub: self.clone(),
        }
    }
}

/// The connection core reaches its hub only through this.
impl ConnectionHost for HubShared {
    type Dispatcher = Dispatcher;

    fn options(&self) -> &HubOptions {
        &self.options
    }

    fn connection_config(&self, transport: TransportKind) -> Arc<ConnectionConfig> {
        self.connection_configs[transport.index()].clone()
    }

    /// Makes a connection reachable: locally at once, and through the backplane once it has
    /// subscribed on the connection's behalf.
    async fn register(&self, conn: &Arc<ConnectionShared>) {
        self.registry.add(conn.clone());
        if let Some(backplane) = &self.backplane {
            let info = ConnectionInfo::new(conn.id.clone(), conn.user_id.clone());
            backplane.connection_added(&info).await;
        }
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.is_cancelled()
    }

    /// Takes a connection out of the registry, its groups and the backplane's interest.
    fn unregister(&self, conn: &ConnectionShared) {
        let groups = self.registry.remove(&conn.id);
        if let Some(backplane) = &self.backplane {
            for group in &groups {
                backplane.group_left(&conn.id, group);
            }
            backplane
                .connection_removed(&ConnectionInfo::new(conn.id.clone(), conn.user_id.clone()));
        }
    }

    /// Picks the protocol for a handshake, or the reference's refusal text.
    fn select_protocol(&self, name: &str, version: u32) -> Result<Protocol, String> {
        let protocol = Protocol::from_name(name)
            .filter(|p| self.options.protocols.contains(p))
            .ok_or_else(|| format!("The protocol '{name}' is not supported."))?;
        if version > protocol.version() {
            return Err(format!(
                "The server does not support version {version} of the '{name}' protocol."
            ));
        }
        Ok(protocol)
    }

    /// The user id `Clients::user` reaches this identity by.
    fn user_id_of(&self, identity: &Identity) -> Option<Arc<str>> {
        match &self.user_id_provider {
            Some(provider) => provider(identity).map(Into::into),
            None => identity.user_id().map(Into::into),
        }
    }

    fn dispatcher(self: &Arc<Self>, conn: &Arc<ConnectionShared>) -> Dispatcher {
        Dispatcher::new(self.clone(), conn.clone())
    }

    /// Runs the connect hook inside the filters; `Err` carries the Close error text.
    async fn on_connected(self: &Arc<Self>, conn: &Arc<ConnectionShared>) -> Result<(), String> {
        let hook = self.on_connected.clone();
        let terminal = ConnectNext::new(move |context: Context| match hook {
            Some(hook) => hook(context, None),
            None => Box::pin(std::future::ready(Ok(()))),
        });
        let chain = connect_chain(&self.filters, terminal);
        let result = AssertUnwindSafe(IN_ON_CONNECTED.scope((), chain.run(self.context(conn))))
            .catch_unwind()
            .await;
        let detailed = self.options.enable_detailed_errors;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(connection = %conn.id, error = %e, "on_connected failed");
                Err(e.describe(CLOSED_WITH_ERROR, detailed))
            }
            Err(_) => {
                tracing::error!(connection = %conn.id, "on_connected panicked");
                Err(CLOSED_WITH_ERROR.to_owned())
            }
        }
    }

    async fn on_disconnected(
        self: &Arc<Self>,
        conn: &Arc<ConnectionShared>,
        error: Option<String>,
    ) {
        let hook = self.on_disconnected.clone();
        let connection = conn.id.clone();
        let terminal = DisconnectNext::new(move |(context, error): (Context, Option<String>)| {
            Box::pin(async move {
                if let Some(hook) = hook {
                    if let Err(e) = hook(context, error).await {
                        tracing::warn!(%connection, error = %e, "on_disconnected failed");
                    }
                }
            })
        });
        let chain = disconnect_chain(&self.filters, terminal);
        if AssertUnwindSafe(chain.run((self.context(conn), error)))
            .catch_unwind()
            .await
            .is_err()
        {
            tracing::error!(connection = %conn.id, "on_disconnected panicked");
        }
    }
}
