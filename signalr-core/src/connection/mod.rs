//! The transport-independent connection core.
//!
//! [`machine`] is the connection as a sans-IO state machine: handshake, framing, every timer,
//! closing, Ack/Sequence and the replay buffer. This module is its tokio driver: a read loop
//! that feeds the machine received bytes and hands hub messages to a [`Dispatch`], and a write
//! loop that moves queued records and the machine's own (Ping, Ack, Sequence) to the transport.
//!
//! A transport supplies two halves: a stream of received byte chunks (any chunking; record
//! boundaries come only from the hub protocol) and a [`TransportSink`] that writes whole records.
//! The connection reaches the hub only through [`ConnectionHost`], so this module can be read,
//! and tested, without the hub.

pub(crate) mod machine;
mod outbound;
mod replay;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::Identity;
use crate::error::{Error, Kind};
use crate::observe;
use crate::options::HubOptions;
use crate::protocol::{Close, InboundMessage, Message, NoValue, Payload, Protocol, SmallString};
use crate::request::{HttpRequest, RemoteAddr};
use crate::transport::{TransportKind, TransportSink};
pub(crate) use machine::{Config, Counters};
use machine::{ConnectionMachine, Event};
use outbound::{Outbound, PushError, CLOSING, SESSION_ENDED, STEP};

pub(crate) use machine::error_close;

/// The generic close error the reference shows clients (details only with detailed errors).
pub(crate) const CLOSED_WITH_ERROR: &str = "Connection closed with an error.";

/// The part of a live connection that the hub, the registry and senders share.
pub(crate) struct ConnectionShared {
    pub(crate) id: Arc<str>,
    pub(crate) protocol: Protocol,
    pub(crate) transport: TransportKind,
    /// Who the connection belongs to, when the hub authenticates.
    pub(crate) identity: Option<Arc<Identity>>,
    /// What `Clients::user` targets (from the identity, or the hub's user-id provider).
    pub(crate) user_id: Option<Arc<str>>,
    /// The HTTP request the connection was made with, for `Context::http_request`.
    pub(crate) request: Option<Arc<HttpRequest>>,
    /// Per-connection values the application stores (`Context.Items`); allocated on first use.
    items: Mutex<Option<Box<http::Extensions>>>,
    /// Group memberships; locked together with the registry's group index so that joining
    /// a group cannot race with disconnecting.
    membership: Mutex<Membership>,
    /// Upload streams in flight, by stream id.
    uploads: Mutex<HashMap<SmallString, mpsc::Sender<UploadItem>>>,
    /// Running invocations the client may cancel, by invocation id.
    invocations: Mutex<HashMap<SmallString, CancellationToken>>,
    /// Client results awaited, by the server-chosen invocation id.
    pending_results: Mutex<HashMap<SmallString, oneshot::Sender<Result<Payload, String>>>>,
    /// The protocol state; the read and write loops each hold it only briefly.
    machine: Mutex<ConnectionMachine>,
    /// Records for the write loop, and the signals that wake the two loops.
    outbound: Outbound,
    /// Fires when the connection closes, for the hub's invocations and streams; the loops
    /// wait on `outbound`'s signals instead, which cost less to poll.
    closing: CancellationToken,
}

impl ConnectionShared {
    fn new(
        params: ConnectionParams,
        user_id: Option<Arc<str>>,
        protocol: Protocol,
        outbound: Outbound,
        machine: ConnectionMachine,
    ) -> Self {
        ConnectionShared {
            id: params.connection_id,
            protocol,
            transport: params.transport,
            identity: params.identity.map(Arc::new),
            user_id,
            request: params.request,
            items: Mutex::new(None),
            membership: Mutex::new(Membership::default()),
            uploads: Mutex::default(),
            invocations: Mutex::default(),
            pending_results: Mutex::default(),
            machine: Mutex::new(machine),
            outbound,
            closing: CancellationToken::new(),
        }
    }

    fn machine(&self) -> std::sync::MutexGuard<'_, ConnectionMachine> {
        lock(&self.machine)
    }

    /// The application's per-connection values.
    pub(crate) fn items(&self) -> ItemsGuard<'_> {
        ItemsGuard(lock(&self.items))
    }

    /// Queues a record without waiting. A full queue means the client reads slower than we
    /// produce: it is closed rather than allowed to grow memory or stall the sender.
    pub(crate) fn try_send(&self, record: Bytes) -> Result<(), Error> {
        match self.outbound.push(record) {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(Error::new(Kind::Closed)),
            Err(PushError::Full(_)) => {
                self.close_slow("outbound queue full");
                Err(Error::with(Kind::Timeout, "outbound queue full"))
            }
        }
    }

    /// Queues a record if that needs no wait: `Err` gives it back when the queue is full. A
    /// closing connection takes it and drops it, as [`send`](Self::send) would have.
    pub(crate) fn queue_now(&self, record: Bytes) -> Result<(), Bytes> {
        match self.push_unless_closing(record) {
            Ok(()) | Err(PushError::Closed) => Ok(()),
            Err(PushError::Full(record)) => Err(record),
        }
    }

    /// Queues a record if there is room and the connection is not closing.
    fn push_unless_closing(&self, record: Bytes) -> Result<(), PushError> {
        if self.is_closing() {
            return Err(PushError::Closed);
        }
        self.outbound.push(record)
    }

    /// Queues a record, waiting up to `timeout` for space; a client that stays full that long
    /// is closed.
    pub(crate) async fn send(&self, record: Bytes, timeout: Duration) -> Result<(), Error> {
        // The queue usually has room: taking it directly spares a timer per record.
        let record = match self.push_unless_closing(record) {
            Ok(()) => return Ok(()),
            Err(PushError::Closed) => return Err(Error::new(Kind::Closed)),
            Err(PushError::Full(record)) => record,
        };
        match self.outbound.push_waiting(record, timeout).await {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(Error::new(Kind::Closed)),
            Err(PushError::Full(_)) => {
                self.close_slow("send timed out");
                Err(Error::with(Kind::Timeout, "send timed out"))
            }
        }
    }

    /// Closes a client that reads slower than we write to it. Every send that finds its queue
    /// full lands here until the close is done; only the first is logged and counted.
    fn close_slow(&self, reason: &'static str) {
        let first = {
            let mut machine = self.machine();
            let first = machine.ending().is_none();
            let close = Close {
                error: Some(CLOSED_WITH_ERROR.into()),
                allow_reconnect: true,
            };
            machine.close(close, Some(format!("slow client: {reason}")));
            if first {
                machine
                    .counters()
                    .slow_client_closes
                    .fetch_add(1, Ordering::Relaxed);
            }
            first
        };
        self.cancel_closing();
        if first {
            observe::slow_client_closed(self.transport);
            tracing::warn!(connection = %self.id, reason, "closing a client that reads too slowly");
        }
    }

    /// Starts closing: the write loop sends what is queued, then `close`, then ends the
    /// transport. The first reason given wins.
    pub(crate) fn close(&self, close: Close) {
        self.machine().close(close, None);
        self.cancel_closing();
    }

    /// Ends both loops (the writer after the close sequence) and the hub's invocations.
    fn cancel_closing(&self) {
        self.outbound.raise(CLOSING);
        self.closing.cancel();
    }

    /// Applies the machine's timer rules at `now`; returns whether the connection ended.
    fn handle_timeout(&self, now: std::time::Instant) -> bool {
        let ended = {
            let mut machine = self.machine();
            machine.handle_timeout(now);
            machine.is_ended()
        };
        if ended {
            self.cancel_closing();
        }
        ended
    }

    /// Fires when the connection closes.
    pub(crate) fn closing_token(&self) -> CancellationToken {
        self.closing.clone()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.outbound.is_raised(CLOSING)
    }

    fn membership(&self) -> std::sync::MutexGuard<'_, Membership> {
        self.membership.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a group membership and runs `index` (the registry's side) under the same lock.
    /// Returns false once the connection has left.
    pub(crate) fn join_group(&self, group: Arc<str>, index: impl FnOnce()) -> bool {
        let mut membership = self.membership();
        if membership.left {
            return false;
        }
        if membership.groups.insert(group) {
            index();
        }
        true
    }

    pub(crate) fn leave_group(&self, group: &str, index: impl FnOnce()) {
        let mut membership = self.membership();
        if membership.groups.remove(group) {
            index();
        }
    }

    /// Marks the connection as gone and hands back its groups for the registry to clean up.
    pub(crate) fn leave_all_groups(&self) -> Vec<Arc<str>> {
        let mut membership = self.membership();
        membership.left = true;
        membership.groups.drain().collect()
    }

    /// The groups the connection is in now.
    pub(crate) fn groups(&self) -> Vec<String> {
        self.membership()
            .groups
            .iter()
            .map(|g| g.to_string())
            .collect()
    }

    /// Registers an upload stream's channel; items for it are routed there.
    pub(crate) fn register_upload(&self, stream_id: SmallString, items: mpsc::Sender<UploadItem>) {
        lock(&self.uploads).insert(stream_id, items);
    }

    pub(crate) fn upload(&self, stream_id: &str) -> Option<mpsc::Sender<UploadItem>> {
        lock(&self.uploads).get(stream_id).cloned()
    }

    pub(crate) fn remove_upload(&self, stream_id: &str) -> Option<mpsc::Sender<UploadItem>> {
        lock(&self.uploads).remove(stream_id)
    }

    /// Registers a running invocation; false when the id is already in use.
    pub(crate) fn register_invocation(&self, id: &str, token: CancellationToken) -> bool {
        let mut invocations = lock(&self.invocations);
        if invocations.contains_key(id) {
            return false;
        }
        invocations.insert(id.into(), token);
        true
    }

    pub(crate) fn finish_invocation(&self, id: &str) {
        lock(&self.invocations).remove(id);
    }

    pub(crate) fn cancel_invocation(&self, id: &str) {
        if let Some(token) = lock(&self.invocations).get(id) {
            token.cancel();
        }
    }

    /// Awaits a client result under a server-chosen invocation id.
    pub(crate) fn expect_result(
        &self,
        id: SmallString,
    ) -> oneshot::Receiver<Result<Payload, String>> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending_results).insert(id, tx);
        rx
    }

    pub(crate) fn take_pending_result(
        &self,
        id: &str,
    ) -> Option<oneshot::Sender<Result<Payload, String>>> {
        lock(&self.pending_results).remove(id)
    }

    /// The connection is over: stop its invocations and streams, fail awaited client results.
    fn end_calls(&self) {
        for (_, token) in lock(&self.invocations).drain() {
            token.cancel();
        }
        lock(&self.uploads).clear();
        // Dropping the waiters fails each awaited client result as "disconnected" at once.
        lock(&self.pending_results).clear();
    }
}

/// A connection's items, created on the first insert (most connections never store any).
pub(crate) struct ItemsGuard<'a>(std::sync::MutexGuard<'a, Option<Box<http::Extensions>>>);

impl ItemsGuard<'_> {
    pub(crate) fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        self.0.get_or_insert_with(Box::default).insert(value);
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.as_ref()?.get::<T>()
    }

    pub(crate) fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        self.0.as_mut()?.remove::<T>()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Membership {
    groups: std::collections::HashSet<Arc<str>>,
    left: bool,
}

/// An item of an upload stream as the connection routes it to a method: a value, or the
/// client's error ending the stream.
pub(crate) type UploadItem = Result<Payload, String>;

/// Identity of a connection before it is running.
pub(crate) struct ConnectionParams {
    pub(crate) connection_id: Arc<str>,
    pub(crate) transport: TransportKind,
    pub(crate) identity: Option<Identity>,
    pub(crate) request: Option<Arc<HttpRequest>>,
}

/// Handles the hub messages of one connection, in order. The read loop waits while it does:
/// that is the backpressure a busy method puts on its client.
pub(crate) trait Dispatch: Send {
    fn dispatch(&mut self, message: InboundMessage) -> impl Future<Output = ()> + Send;
    /// Handles `message` without a future when nothing about it waits (most invocations),
    /// taking what it needs out of it, and returns true; or returns false with `message`
    /// untouched, for [`Dispatch::dispatch`]. The read loop tries this first, so the common
    /// message costs no boxed future. By reference, so that a message is not copied back and
    /// forth (an invocation is 176 bytes on 64-bit targets).
    fn dispatch_at_once(
        &mut self,
        message: &mut InboundMessage,
        cx: &mut std::task::Context<'_>,
    ) -> bool;
}

/// What a connection needs from the hub it belongs to, and nothing more.
pub(crate) trait ConnectionHost: Send + Sync + 'static {
    type Dispatcher: Dispatch;

    fn options(&self) -> &HubOptions;
    /// The state machine's settings for a transport (one shared value per transport).
    fn connection_config(&self, transport: TransportKind) -> Arc<Config>;
    /// Picks the protocol for a handshake, or the refusal text.
    fn select_protocol(&self, name: &str, version: u32) -> Result<Protocol, String>;
    /// The user id `Clients::user` reaches this identity by.
    fn user_id_of(&self, identity: &Identity) -> Option<Arc<str>>;
    /// Makes the connection reachable by senders.
    fn register(&self, conn: &Arc<ConnectionShared>) -> impl Future<Output = ()> + Send;
    fn unregister(&self, conn: &ConnectionShared);
    /// Whether the hub is shutting down (a connection ending now ends because of it).
    fn is_shutting_down(&self) -> bool;
    /// Runs the connect hook; `Err` carries the Close error text.
    fn on_connected(
        self: &Arc<Self>,
        conn: &Arc<ConnectionShared>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    fn on_disconnected(
        self: &Arc<Self>,
        conn: &Arc<ConnectionShared>,
        error: Option<String>,
    ) -> impl Future<Output = ()> + Send;
    fn dispatcher(self: &Arc<Self>, conn: &Arc<ConnectionShared>) -> Self::Dispatcher;
}

/// The driver's clock: tokio's, so that a paused test clock moves the machine too.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// A timer re-armed lazily: it may fire early (the deadline moved later since it was set),
/// and its owner then finds nothing due. Only an earlier deadline re-arms it at once, so a
/// deadline pushed back by every message (or every request) costs no timer reset.
///
/// Once polled, the timer is not polled again by the same task until it has elapsed: tokio
/// keeps the waker it was given and wakes that task when the time comes, so polling it again
/// at every other wake-up (every message) would only register the same waker again.
pub(crate) struct Timer {
    sleep: Pin<Box<Sleep>>,
    armed: Option<std::time::Instant>,
    /// The waker the sleep was last polled with, as the addresses of its data and vtable
    /// (only compared), until it is reset or fires.
    polled_with: Option<(usize, usize)>,
}

impl Timer {
    pub(crate) fn new() -> Self {
        Timer {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
            polled_with: None,
        }
    }

    /// Makes sure the timer fires no later than `deadline`; `false` when there is none.
    pub(crate) fn arm(&mut self, deadline: Option<std::time::Instant>) -> bool {
        let Some(deadline) = deadline else {
            return false;
        };
        if self.armed.is_none_or(|armed| deadline < armed) {
            self.sleep.as_mut().reset(Instant::from_std(deadline));
            self.armed = Some(deadline);
            self.polled_with = None;
        }
        true
    }

    pub(crate) async fn fired(&mut self) {
        std::future::poll_fn(|cx| self.poll_fired(cx)).await
    }

    /// [`fired`](Self::fired) as a poll: `Ready` once the armed deadline passed.
    pub(crate) fn poll_fired(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let waker = cx.waker();
        let current = (
            waker.data() as usize,
            std::ptr::from_ref(waker.vtable()) as usize,
        );
        if self.polled_with == Some(current) && !self.sleep.is_elapsed() {
            return std::task::Poll::Pending;
        }
        // Outside tokio's cooperative budget: a sleep whose task has used its budget
        // answers Pending without registering its waker, and the timer would then
        // never fire.
        let sleep = std::pin::pin!(tokio::task::unconstrained(self.sleep.as_mut()));
        match sleep.poll(cx) {
            std::task::Poll::Ready(()) => {
                self.armed = None;
                self.polled_with = None;
                std::task::Poll::Ready(())
            }
            std::task::Poll::Pending => {
                self.polled_with = Some(current);
                std::task::Poll::Pending
            }
        }
    }
}

/// Runs one connection to its end over any transport, inside a span that names it: every
/// event of the connection, its hub methods included, carries its id, transport, protocol
/// and user.
pub(crate) async fn run<H, I, S>(
    host: Arc<H>,
    params: ConnectionParams,
    inbound: I,
    sink: S,
    reattach: Option<mpsc::Receiver<(I, S)>>,
) where
    H: ConnectionHost,
    I: Stream<Item = io::Result<Bytes>> + Unpin + Send,
    S: TransportSink,
{
    let remote = params
        .request
        .as_ref()
        .and_then(|request| request.extensions().get::<RemoteAddr>())
        .map(|remote| remote.0);
    let span = tracing::info_span!(
        "connection",
        id = %params.connection_id,
        transport = params.transport.as_str(),
        remote = remote.map(tracing::field::display),
        protocol = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    run_connection(host, params, inbound, sink, reattach)
        .instrument(span)
        .await
}

/// Runs one connection to its end: opening (the handshake), serving its transports, and
/// finishing. Opening and finishing are boxed futures of their own, so that what they hold
/// is not part of the state every open connection keeps for its whole life.
async fn run_connection<H, I, S>(
    host: Arc<H>,
    params: ConnectionParams,
    inbound: I,
    sink: S,
    reattach: Option<mpsc::Receiver<(I, S)>>,
) where
    H: ConnectionHost,
    I: Stream<Item = io::Result<Bytes>> + Unpin + Send,
    S: TransportSink,
{
    let opening = Box::pin(open_connection(&host, params, inbound, sink, reattach));
    let Some(opened) = opening.await else {
        return;
    };
    let Opened {
        conn,
        mut inbound,
        mut reattach,
        mut writer,
        span,
        format,
        since,
    } = opened;
    let send_timeout = host.options().send_timeout;
    let end = serve_transports(
        &host,
        &conn,
        &mut inbound,
        &mut reattach,
        &mut writer,
        &span,
        format,
        send_timeout,
    )
    .await;
    let finishing = Box::pin(finish_connection(&host, conn, end, writer, inbound, since));
    finishing.await;
}

/// A connection past its handshake, registered, with its writer running.
struct Opened<I, S> {
    conn: Arc<ConnectionShared>,
    inbound: futures_util::stream::Fuse<I>,
    reattach: Option<mpsc::Receiver<(I, S)>>,
    writer: tokio::task::JoinHandle<()>,
    span: tracing::Span,
    format: crate::protocol::TransferFormat,
    since: tokio::time::Instant,
}

/// The handshake, then registration: `None` when the connection never opened (a refused or
/// unfinished handshake, which has been answered and closed).
async fn open_connection<H, I, S>(
    host: &Arc<H>,
    params: ConnectionParams,
    inbound: I,
    mut sink: S,
    mut reattach: Option<mpsc::Receiver<(I, S)>>,
) -> Option<Opened<I, S>>
where
    H: ConnectionHost,
    I: Stream<Item = io::Result<Bytes>> + Unpin + Send,
    S: TransportSink,
{
    // Fused: the close sequence may poll again after the transport reported its end.
    let mut inbound = inbound.fuse();
    let options = host.options();
    let mut machine = ConnectionMachine::new(host.connection_config(params.transport), now());

    // Nothing here needs boxing: this whole future is boxed, and gone once the connection
    // is open.
    let Some(request) = read_handshake(&mut machine, &mut inbound).await else {
        if let Some(ending) = machine.ending() {
            tracing::warn!(reason = %ending.error, "handshake refused");
            observe::handshake_refused("invalid");
        }
        finish_unopened(&mut machine, &mut sink).await;
        return None;
    };
    let protocol = match host.select_protocol(&request.protocol, request.version) {
        Ok(protocol) => protocol,
        Err(message) => {
            tracing::warn!(reason = %message, "handshake refused");
            observe::handshake_refused("protocol");
            machine.refuse_handshake(&message);
            finish_unopened(&mut machine, &mut sink).await;
            return None;
        }
    };
    let format = protocol.transfer_format();
    if !sink.supports(format) {
        let message = format!(
            "Cannot use the '{}' protocol on the current transport. The transport does not support '{}' transfer format.",
            protocol.name(),
            format.as_str()
        );
        tracing::warn!(reason = %message, "handshake refused");
        observe::handshake_refused("transfer_format");
        machine.refuse_handshake(&message);
        finish_unopened(&mut machine, &mut sink).await;
        return None;
    }
    sink.set_transfer_format(format);

    // Stateful reconnect: negotiated (the transport can re-attach) and asked for with a
    // version 2 handshake; a version 1 handshake turns it off silently, as in the reference.
    if request.version < 2 {
        reattach = None;
    }
    let replay_limit = reattach
        .is_some()
        .then_some(options.stateful_reconnect_buffer_size);
    machine.accept_handshake(now(), protocol, replay_limit);
    // Bounded like every write: a client that sends a handshake and stops reading cannot hold
    // this task.
    let wrote = tokio::time::timeout(
        options.send_timeout,
        write_transmits(&mut machine, &mut sink),
    )
    .await;
    if !matches!(wrote, Ok(Ok(()))) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        return None;
    }

    let outbound = Outbound::new(options.outbound_queue_capacity);
    let user_id = params.identity.as_ref().and_then(|i| host.user_id_of(i));
    let conn = Arc::new(ConnectionShared::new(
        params, user_id, protocol, outbound, machine,
    ));
    host.register(&conn).await;
    let opened = tokio::time::Instant::now();
    observe::connection_opened(conn.transport);
    let span = tracing::Span::current();
    span.record("protocol", protocol.name());
    if let Some(user) = &conn.user_id {
        span.record("user", &**user);
    }
    let send_timeout = options.send_timeout;
    let writer =
        tokio::spawn(write_loop(conn.clone(), sink, send_timeout).instrument(span.clone()));
    tracing::info!(stateful = reattach.is_some(), "connected");
    if options.close_on_authentication_expiration {
        if let Some(expires_at) = conn.identity.as_ref().and_then(|i| i.expires_at()) {
            tokio::spawn(close_at_expiry(conn.clone(), expires_at).instrument(span.clone()));
        }
    }

    Some(Opened {
        conn,
        inbound,
        reattach,
        writer,
        span,
        format,
        since: opened,
    })
}

/// After the last transport: the close sequence, unregistering, the disconnect hook, and a
/// short wait for the client's side of the close.
async fn finish_connection<H, I>(
    host: &Arc<H>,
    conn: Arc<ConnectionShared>,
    end: ReadEnd,
    writer: tokio::task::JoinHandle<()>,
    mut inbound: futures_util::stream::Fuse<I>,
    opened: tokio::time::Instant,
) where
    H: ConnectionHost,
    I: Stream<Item = io::Result<Bytes>> + Unpin + Send,
{
    conn.close(Close::default());
    conn.end_calls();
    // Bounded: every write inside the writer has a timeout. Unregistering only after the
    // Close went out means a graceful shutdown, which waits for the registry to empty, never
    // ends the process while a client's Close is still being written.
    let _ = writer.await;
    // Whatever path the writer ended on, later sends are refused from here on (and senders
    // waiting for room are released) rather than queued for nobody.
    conn.outbound.close();
    host.unregister(&conn);
    let disconnect_error = match end {
        // A client that said goodbye ended gracefully, whatever its transport did next.
        ReadEnd::ClientClosed(error) => error,
        ReadEnd::Failed(error) => Some(error),
        ReadEnd::Ended => conn
            .machine()
            .ending()
            .map(|ending| ending.error.clone())
            .filter(|error| !error.is_empty()),
    };
    let status = if host.is_shutting_down() {
        observe::STATUS_SHUTDOWN
    } else if conn.machine().ending().is_some_and(|e| e.timed_out) {
        observe::STATUS_TIMEOUT
    } else {
        observe::STATUS_NORMAL
    };
    observe::connection_closed(conn.transport, status, opened.elapsed());
    match &disconnect_error {
        Some(error) => tracing::info!(%error, status, "disconnected"),
        None => tracing::info!(status, "disconnected"),
    }
    host.on_disconnected(&conn, disconnect_error).await;
    // Keep reading (and discarding) briefly so the transport can finish its close handshake.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = inbound.next().await {}
    })
    .await;
}

/// The connection's life after the handshake: the connect hook, then reading each transport
/// the client attaches until the connection ends. This is the state an open connection's
/// task keeps, so its one-off awaits (the connect hook, a reconnect's wait) are boxed.
#[allow(clippy::too_many_arguments)]
async fn serve_transports<H, I, S>(
    host: &Arc<H>,
    conn: &Arc<ConnectionShared>,
    inbound: &mut futures_util::stream::Fuse<I>,
    reattach: &mut Option<mpsc::Receiver<(I, S)>>,
    writer: &mut tokio::task::JoinHandle<()>,
    span: &tracing::Span,
    format: crate::protocol::TransferFormat,
    send_timeout: Duration,
) -> ReadEnd
where
    H: ConnectionHost,
    I: Stream<Item = io::Result<Bytes>> + Unpin + Send,
    S: TransportSink,
{
    match Box::pin(host.on_connected(conn)).await {
        Err(message) => {
            conn.close(Close {
                error: Some(message.clone()),
                allow_reconnect: false,
            });
            ReadEnd::Failed(message)
        }
        Ok(()) => {
            let mut dispatcher = host.dispatcher(conn);
            let mut timer = Timer::new();
            loop {
                let read = read_loop(conn, &mut dispatcher, inbound, &mut timer);
                let replacement = next_transport(reattach);
                let (end, next) = tokio::select! {
                    end = read => (Some(end), None),
                    next = replacement => (None, next),
                };
                let next = match (end, next) {
                    // The client reconnected while the old socket still looked open.
                    (None, Some(next)) => next,
                    (Some(ReadEnd::Failed(error)), None)
                        if reattach.is_some()
                            && !conn.is_closing()
                            && conn.machine().transport_lost(now(), &error) =>
                    {
                        // Stateful: the transport dropped; keep everything for the grace period.
                        tracing::info!(%error, "transport lost; waiting for a reconnect");
                        conn.outbound.raise(SESSION_ENDED);
                        match Box::pin(await_reconnect(conn, reattach, &mut timer)).await {
                            Some(next) => next,
                            None => break ReadEnd::Failed(error),
                        }
                    }
                    (Some(end), _) => break end,
                    (None, None) => break ReadEnd::Ended,
                };
                conn.outbound.raise(SESSION_ENDED);
                let _ = (&mut *writer).await;
                tracing::info!("transport re-attached");
                let (next_inbound, mut next_sink) = next;
                // The new socket speaks the format the handshake chose on the first one.
                next_sink.set_transfer_format(format);
                *inbound = next_inbound.fuse();
                conn.machine().transport_replaced(now());
                conn.outbound.start_session();
                *writer = tokio::spawn(
                    write_loop(conn.clone(), next_sink, send_timeout).instrument(span.clone()),
                );
            }
        }
    }
}

/// Feeds received bytes to the machine until it has a whole handshake request; `None` when
/// the machine refused it (too large, malformed, too late) or the client went away.
async fn read_handshake<I>(
    machine: &mut ConnectionMachine,
    inbound: &mut I,
) -> Option<crate::protocol::HandshakeRequest>
where
    I: Stream<Item = io::Result<Bytes>> + Unpin,
{
    let mut timer = Timer::new();
    loop {
        if let Some(Event::Handshake(request)) = machine.poll_event(now()) {
            return Some(request);
        }
        if machine.is_ended() {
            return None;
        }
        timer.arm(machine.poll_timeout());
        tokio::select! {
            biased;
            next = inbound.next() => match next {
                Some(Ok(chunk)) => machine.handle_bytes(chunk),
                Some(Err(_)) | None => return None,
            },
            _ = timer.fired() => machine.handle_timeout(now()),
        }
    }
}

/// Writes what the machine queued (a refused handshake's response), then closes.
async fn finish_unopened<S: TransportSink>(machine: &mut ConnectionMachine, sink: &mut S) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, write_transmits(machine, sink)).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}

/// Writes and flushes every record the machine queued of its own.
async fn write_transmits<S: TransportSink>(
    machine: &mut ConnectionMachine,
    sink: &mut S,
) -> io::Result<()> {
    let mut wrote = false;
    while let Some(record) = machine.poll_transmit(now()) {
        sink.feed(record).await?;
        wrote = true;
    }
    if wrote {
        sink.flush().await?;
    }
    Ok(())
}

/// Stateful reconnect: waits for the client's next transport until the machine's grace ends.
async fn await_reconnect<T>(
    conn: &ConnectionShared,
    reattach: &mut Option<mpsc::Receiver<T>>,
    timer: &mut Timer,
) -> Option<T> {
    loop {
        if !timer.arm(conn.machine().read_deadline()) {
            return None;
        }
        tokio::select! {
            next = next_transport(reattach) => return next,
            _ = timer.fired() => if conn.handle_timeout(now()) {
                return None;
            },
        }
    }
}

/// Closes the connection when its credentials expire; clients with automatic reconnect come
/// back with fresh ones.
async fn close_at_expiry(conn: Arc<ConnectionShared>, expires_at: std::time::SystemTime) {
    let remaining = expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::select! {
        _ = conn.closing.cancelled() => {}
        _ = tokio::time::sleep(remaining) => {
            tracing::info!("authentication expired; closing");
            conn.close(Close {
                error: Some("Authentication expired.".to_owned()),
                allow_reconnect: true,
            });
        }
    }
}

/// The next transport a reconnecting client attaches; never, without stateful reconnect.
async fn next_transport<T>(reattach: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match reattach {
        Some(transports) => transports.recv().await,
        None => std::future::pending().await,
    }
}

async fn write_now<S: TransportSink>(sink: &mut S, record: Bytes) -> io::Result<()> {
    sink.feed(record).await?;
    sink.flush().await
}

/// One step of the read loop (see `read_loop`).
enum Step<F> {
    /// A message was dispatched at once.
    Dispatched,
    /// A message whose dispatch waits: this future does it.
    Dispatch(std::pin::Pin<Box<F>>),
    ClientClosed(Option<String>),
    /// Nothing to do yet.
    Again,
    /// Nothing more received: the machine's ending, whether it is stateful, and the deadline
    /// to wait until.
    Wait(Option<String>, bool, Option<std::time::Instant>),
}

/// How the read loop ended.
enum ReadEnd {
    /// The client sent Close (with its error, if any).
    ClientClosed(Option<String>),
    /// The transport ended, or the server closed the connection.
    Ended,
    /// A protocol error, a timeout, or a failed transport.
    Failed(String),
}

/// Feeds received bytes to the machine and dispatches the hub messages it yields, until the
/// connection ends or (stateful) this transport does.
async fn read_loop<D, I>(
    conn: &Arc<ConnectionShared>,
    dispatcher: &mut D,
    inbound: &mut I,
    timer: &mut Timer,
) -> ReadEnd
where
    D: Dispatch,
    I: Stream<Item = io::Result<Bytes>> + Unpin + Send,
{
    // Chunks received wait here until the next lock of the machine, which also decodes them.
    let mut chunks: Vec<Bytes> = Vec::new();
    // The transport's end or failure, noticed while taking chunks that were already there:
    // acted on once everything received before it has been dispatched.
    let mut transport_end: Option<Option<io::Error>> = None;
    // Work done since this task last let others run: a client whose input is always ready
    // (a flood of tiny frames, a pipeline of invocations) must not hold a worker thread.
    let mut work = 0usize;
    // A dispatch just finished: the client timeout restarts from here (see `dispatched`).
    let mut dispatched = false;
    // Received since the metrics were last told, which is once per batch, not per message.
    let (mut messages, mut bytes) = (0u64, 0u64);
    // The end of this session or of the connection; a flag and a waker, cheap to poll.
    let mut stopped = std::future::poll_fn(|cx| conn.outbound.poll_reader_stop(cx));
    loop {
        // One synchronous step: what arrived goes to the machine, and a message it yields is
        // dispatched at once when nothing about it waits. Inside `poll_fn` for the task's
        // context, and so that the message never lives in this loop's own state: every idle
        // connection's task is as large as that state.
        let mut lent = Some(&mut *dispatcher);
        let step = std::future::poll_fn(|cx| {
            let event = {
                let mut machine = conn.machine();
                for chunk in chunks.drain(..) {
                    machine.handle_bytes(chunk);
                }
                let now = now();
                if std::mem::take(&mut dispatched) {
                    machine.dispatched(now);
                }
                match machine.poll_event(now) {
                    Some(event) => event,
                    None => {
                        return std::task::Poll::Ready(Step::Wait(
                            machine.ending().map(|ending| ending.error.clone()),
                            machine.is_stateful(),
                            machine.read_deadline(),
                        ))
                    }
                }
            };
            std::task::Poll::Ready(match event {
                Event::Message(mut message) => {
                    let dispatcher = lent.take().expect("one message per step");
                    if dispatcher.dispatch_at_once(&mut message, cx) {
                        Step::Dispatched
                    } else {
                        Step::Dispatch(Box::pin(dispatcher.dispatch(message)))
                    }
                }
                Event::ClientClosed(error) => Step::ClientClosed(error),
                // Only before the handshake completed, which the reader never sees.
                Event::Handshake(_) => Step::Again,
            })
        })
        .await;
        let (ended, stateful, deadline) = match step {
            Step::Dispatched | Step::Dispatch(_) => {
                messages += 1;
                if let Step::Dispatch(waiting) = step {
                    waiting.await;
                }
                dispatched = true;
                work += MESSAGE_WORK;
                if work >= WORK_BUDGET {
                    work = 0;
                    tokio::task::yield_now().await;
                }
                continue;
            }
            Step::ClientClosed(error) => return ReadEnd::ClientClosed(error),
            Step::Again => continue,
            Step::Wait(ended, stateful, deadline) => (ended, stateful, deadline),
        };
        if let Some(error) = ended {
            conn.cancel_closing();
            return ReadEnd::Failed(error);
        }
        if stateful {
            // Acks may have made room, and processed messages are due an Ack.
            conn.outbound.raise(STEP);
        }
        match transport_end.take() {
            Some(Some(error)) => return transport_read_failed(conn, stateful, &error),
            Some(None) => return ReadEnd::Ended,
            None => {}
        }
        if messages > 0 || bytes > 0 {
            observe::received(conn.transport, messages, bytes);
            (messages, bytes) = (0, 0);
        }
        if work >= WORK_BUDGET {
            work = 0;
            tokio::task::yield_now().await;
        }
        let armed = timer.arm(deadline);
        tokio::select! {
            biased;
            _ = &mut stopped => return if conn.is_closing() {
                client_close_already_received(conn, inbound)
            } else {
                ReadEnd::Failed("the transport failed".to_owned())
            },
            next = inbound.next() => match next {
                Some(Ok(received)) => {
                    work += received.len() + CHUNK_WORK;
                    bytes += received.len() as u64;
                    chunks.push(received);
                    // Take what else has already arrived (many small frames in one TCP read),
                    // so that the machine is locked and searched once for all of it.
                    while work < WORK_BUDGET {
                        match inbound.next().now_or_never() {
                            Some(Some(Ok(received))) => {
                                work += received.len() + CHUNK_WORK;
                                bytes += received.len() as u64;
                                chunks.push(received);
                            }
                            Some(Some(Err(error))) => {
                                transport_end = Some(Some(error));
                                break;
                            }
                            Some(None) => {
                                transport_end = Some(None);
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Some(Err(error)) => return transport_read_failed(conn, stateful, &error),
                None => return ReadEnd::Ended,
            },
            _ = timer.fired(), if armed => {
                conn.handle_timeout(now());
            }
        }
    }
}

/// How much a connection's read loop does before it yields to other tasks, in bytes: a
/// received chunk counts its length plus [`CHUNK_WORK`], a dispatched message [`MESSAGE_WORK`].
/// 16 KiB is tens of microseconds of decoding, or 128 tiny frames, or 16 messages, so one
/// client flooding tiny frames or pipelined invocations delays another by no more than that
/// per turn; a yield costs far less than any of those.
const WORK_BUDGET: usize = 16 * 1024;
/// The fixed cost of a chunk, whatever its size: a one-byte WebSocket frame costs about as
/// much to parse as a hundred bytes of JSON.
const CHUNK_WORK: usize = 128;
/// The cost of dispatching one message.
const MESSAGE_WORK: usize = 1024;

/// The transport could not be read. A protocol violation (invalid UTF-8, an unmasked frame,
/// an oversized frame) gets a Close that says so before the transport ends; a stateful
/// connection waits for a reconnect instead.
fn transport_read_failed(conn: &ConnectionShared, stateful: bool, error: &io::Error) -> ReadEnd {
    let text = error.to_string();
    if !stateful {
        let detailed = conn.machine().detailed_errors();
        let detail = match error.kind() {
            io::ErrorKind::InvalidData => format!("WebSocketException: {text}"),
            _ => format!("IOException: {text}"),
        };
        conn.close(error_close(detailed, &detail));
    }
    ReadEnd::Failed(text)
}

/// On close, looks through input that has already arrived for the client's own Close: a client
/// that posts Close and then drops its transport (SSE, long polling) ended gracefully, even if
/// the write side noticed the dropped transport first.
fn client_close_already_received<I>(conn: &ConnectionShared, inbound: &mut I) -> ReadEnd
where
    I: Stream<Item = io::Result<Bytes>> + Unpin,
{
    let mut machine = conn.machine();
    while let Some(Some(Ok(chunk))) = inbound.next().now_or_never() {
        machine.handle_bytes(chunk);
    }
    if let Some(error) = machine.client_close_in_input() {
        return ReadEnd::ClientClosed(error);
    }
    ReadEnd::Ended
}

/// How long closing may take: draining queued frames, the Close record, the peer's reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames written before one flush, so a burst becomes few syscalls without starving pings.
const MAX_BATCH: usize = 64;

impl ConnectionShared {
    /// One lock of the machine per wake-up of the writer: the machine's own records (Ping,
    /// Ack, Sequence and a replay) go first, then queued ones while the replay buffer has
    /// room. Returns whether hub records may go out, and when the writer must wake next.
    fn take_batch(
        &self,
        now: std::time::Instant,
        batch: &mut Vec<Bytes>,
    ) -> (bool, Option<std::time::Instant>) {
        let mut machine = self.machine();
        machine.writer_step(now, batch);
        self.outbound.take(batch, MAX_BATCH, |record| {
            if !machine.has_room() {
                return false;
            }
            machine.on_send(now, record);
            true
        });
        (machine.has_room(), machine.write_deadline())
    }
}

/// Moves queued records and the machine's own to the transport, and performs the close
/// sequence.
///
/// Every write is bounded by `send_timeout` (the reference's `TransportSendTimeout`): a client
/// that stops reading cannot hold this task, its socket and its queue forever. When the
/// session ends the transport is abandoned (it dropped, or a reconnect replaced it) and the
/// queue is left for the next session.
async fn write_loop<S: TransportSink>(
    conn: Arc<ConnectionShared>,
    mut sink: S,
    send_timeout: Duration,
) {
    let mut timer = Timer::new();
    let gone = sink.gone();
    tokio::pin!(gone);
    let stateful = conn.machine().is_stateful();
    // Reused for every batch.
    let mut batch: Vec<Bytes> = Vec::new();
    let mut next = conn.take_batch(now(), &mut batch);
    let result: io::Result<()> = async {
        loop {
            if !batch.is_empty() {
                let records = batch.len() as u64;
                let bytes = batch.iter().map(|record| record.len() as u64).sum();
                within(send_timeout, feed_all(&mut sink, &mut batch)).await?;
                observe::sent(conn.transport, records, bytes);
            }
            let (room, deadline) = next;
            let armed = timer.arm(deadline);
            tokio::select! {
                biased;
                // The client left (an SSE request it aborted): a normal end, as in the
                // reference, even with records still queued for it.
                _ = &mut gone => {
                    conn.close(Close::default());
                    return Ok(());
                }
                // One wait for a queued record (when there is room for it), the connection
                // closing, the session ending and the read side's Acks.
                signals = std::future::poll_fn(|cx| conn.outbound.poll_writer(cx, room)) => {
                    if signals & (CLOSING | SESSION_ENDED) != 0 {
                        return Ok(());
                    }
                    next = conn.take_batch(now(), &mut batch);
                }
                _ = timer.fired(), if armed => {
                    conn.handle_timeout(now());
                    next = conn.take_batch(now(), &mut batch);
                }
            }
        }
    }
    .await;

    let closing = Box::pin(end_session(conn, sink, stateful, result));
    closing.await;
}

/// What the write loop does when it stops: nothing more for a session that ended (a stateful
/// connection waits for the next transport); otherwise the close sequence, its own future so
/// that the loop's state does not carry it.
async fn end_session<S: TransportSink>(
    conn: Arc<ConnectionShared>,
    mut sink: S,
    stateful: bool,
    result: io::Result<()>,
) {
    if conn.outbound.is_raised(SESSION_ENDED) && !conn.is_closing() {
        // This transport is done; the connection waits for the next one.
        return;
    }
    if let Err(error) = result {
        if stateful {
            // Keep the connection: end this session only, and wait for a reconnect.
            conn.outbound.raise(SESSION_ENDED);
            return;
        }
        // The transport failed: make sure the read side stops too.
        conn.machine().transport_lost(now(), &error.to_string());
        conn.cancel_closing();
    } else {
        let close = conn
            .machine()
            .ending()
            .and_then(|ending| ending.close.clone());
        let protocol = conn.protocol;
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            for record in conn.outbound.close() {
                sink.feed(record).await?;
            }
            match close {
                Some(close) => {
                    let record = protocol
                        .encode_to_bytes(&Message::<NoValue, NoValue>::Close(close))
                        .map_err(io::Error::other)?;
                    write_now(&mut sink, record).await
                }
                None => sink.flush().await,
            }
        })
        .await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}

/// Writes a batch of records and flushes once; the batch is left empty.
async fn feed_all<S: TransportSink>(sink: &mut S, batch: &mut Vec<Bytes>) -> io::Result<()> {
    for record in batch.drain(..) {
        sink.feed(record).await?;
    }
    sink.flush().await
}

/// Bounds `write` by `limit`. Most writes finish on their first poll: those skip the timer.
async fn within(
    limit: Duration,
    write: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(result) = first {
        return result;
    }
    // Boxed: the timer exists only while a write waits, not in every connection's writer.
    let waiting = Box::pin(tokio::time::timeout(limit, write));
    waiting
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    /// A client that stopped reading with every buffer full: no write or close ever finishes.
    struct StalledSink {
        closes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl TransportSink for StalledSink {
        fn supports(&self, _format: crate::protocol::TransferFormat) -> bool {
            true
        }

        fn set_transfer_format(&mut self, _format: crate::protocol::TransferFormat) {}

        async fn feed(&mut self, _record: Bytes) -> io::Result<()> {
            std::future::pending().await
        }

        async fn flush(&mut self) -> io::Result<()> {
            std::future::pending().await
        }

        async fn close(&mut self) {
            self.closes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::future::pending().await
        }
    }

    /// Runs a connection whose client sends `handshake`, then nothing (its stream stays
    /// open), to a stalled sink; returns how long the connection lived, in virtual time, and
    /// how often it tried to close the sink. Fails instead of hanging.
    async fn run_against_stalled_client(
        hub: &crate::Hub,
        handshake: &'static str,
    ) -> (Duration, usize) {
        let closes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sink = StalledSink {
            closes: closes.clone(),
        };
        let params = ConnectionParams {
            connection_id: crate::id::new_id().into(),
            transport: TransportKind::WebSockets,
            identity: None,
            request: None,
        };
        let inbound = futures_util::stream::iter([Ok(Bytes::from_static(handshake.as_bytes()))])
            .chain(futures_util::stream::pending());
        let started = tokio::time::Instant::now();
        let ran = run(hub.shared().clone(), params, inbound, sink, None);
        tokio::time::timeout(Duration::from_secs(3600), ran)
            .await
            .expect("the connection task never ended");
        (
            started.elapsed(),
            closes.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_handshake_answer_the_client_never_reads_is_given_up_after_the_send_timeout() {
        let send_timeout = Duration::from_secs(3);
        let hub = crate::Hub::builder().send_timeout(send_timeout).build();
        let (lived, closes) =
            run_against_stalled_client(&hub, "{\"protocol\":\"json\",\"version\":1}\u{1e}").await;
        // The answer is given up after the send timeout, then the close after its own bound.
        assert_eq!(lived, send_timeout + CLOSE_TIMEOUT);
        assert_eq!(closes, 1);
        assert_eq!(hub.connection_count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_handshake_to_a_client_that_never_reads_is_let_go_after_the_close_timeout() {
        // A long send timeout, to show that it is not what bounds a connection that never opened.
        let hub = crate::Hub::builder()
            .send_timeout(Duration::from_secs(600))
            .build();
        let (lived, closes) =
            run_against_stalled_client(&hub, "{\"protocol\":\"nope\",\"version\":1}\u{1e}").await;
        // The refusal's write, then the close, each bounded by the close timeout.
        assert_eq!(lived, CLOSE_TIMEOUT * 2);
        assert_eq!(closes, 1);
    }

    fn after(duration: Duration) -> Option<std::time::Instant> {
        Some(now() + duration)
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_fires_on_time_through_other_wake_ups() {
        let mut timer = Timer::new();
        let started = Instant::now();
        timer.arm(after(Duration::from_secs(10)));
        let mut ticks = 0;
        loop {
            tokio::select! {
                biased;
                _ = timer.fired() => break,
                // Other work wakes the task every second; the timer is not polled again.
                _ = tokio::time::sleep(Duration::from_secs(1)) => ticks += 1,
            }
        }
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(ticks, 9);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_rearms_a_polled_timer_and_a_later_one_waits() {
        let mut timer = Timer::new();
        let started = Instant::now();
        timer.arm(after(Duration::from_secs(10)));
        assert!(timer.fired().now_or_never().is_none());
        timer.arm(after(Duration::from_secs(2)));
        timer.fired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // A later deadline is not set until the timer has fired once more (lazily).
        timer.arm(after(Duration::from_secs(5)));
        timer.arm(after(Duration::from_secs(8)));
        timer.fired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_polled_after_the_task_spent_its_budget_still_fires() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..1_000 {
            tx.send(i).unwrap();
        }
        let mut timer = Timer::new();
        let started = Instant::now();
        timer.arm(after(Duration::from_secs(10)));
        let mut fired = std::pin::pin!(timer.fired());
        let first = std::future::poll_fn(|cx| {
            // Spends tokio's cooperative budget for this poll (the channel says Pending then).
            while let Poll::Ready(Some(_)) = rx.poll_recv(cx) {}
            Poll::Ready(fired.as_mut().poll(cx))
        })
        .await;
        assert!(first.is_pending());
        tokio::time::timeout(Duration::from_secs(60), fired)
            .await
            .expect("the timer never fired");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
