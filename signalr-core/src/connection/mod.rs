//! The transport-independent connection core: handshake, the read loop that feeds the hub
//! dispatcher, the write loop with keep-alive, timeouts, and closing.
//!
//! A transport supplies two halves: a stream of received byte chunks (any chunking; record
//! boundaries come only from the hub protocol) and a [`TransportSink`] that writes whole records.
//! Everything else (limits, timers, Close messages, stateful reconnect) lives here once, for
//! every transport.

mod replay;

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::error::{Error, Kind};
use crate::hub::dispatch::Dispatcher;
use crate::hub::streams::UploadItem;
use crate::hub::HubShared;
use replay::ReplayBuffer;

use crate::protocol::{
    decode_handshake_request, encode_handshake_response, Close, HandshakeError, InboundMessage,
    Message, NoValue, Payload, Protocol, ProtocolError,
};
use crate::transport::{TransportKind, TransportSink};

/// The generic close error the reference shows clients (details only with detailed errors).
pub(crate) const CLOSED_WITH_ERROR: &str = "Connection closed with an error.";

/// How long closing may take: draining queued frames, the Close record, the peer's reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames written before one flush, so a burst becomes few syscalls without starving pings.
const MAX_BATCH: usize = 64;

/// The part of a live connection that the hub, the registry and senders share.
pub(crate) struct ConnectionShared {
    pub(crate) id: Arc<str>,
    pub(crate) protocol: Protocol,
    pub(crate) transport: TransportKind,
    /// Who the connection belongs to, when the hub authenticates.
    pub(crate) identity: Option<Arc<Identity>>,
    /// What `Clients::user` targets (from the identity, or the hub's user-id provider).
    pub(crate) user_id: Option<Arc<str>>,
    /// Group memberships; locked together with the registry's group index so that joining
    /// a group cannot race with disconnecting.
    membership: Mutex<Membership>,
    /// Upload streams in flight, by stream id.
    uploads: Mutex<HashMap<String, mpsc::Sender<UploadItem>>>,
    /// Running invocations the client may cancel, by invocation id.
    invocations: Mutex<HashMap<String, CancellationToken>>,
    /// Client results awaited, by the server-chosen invocation id.
    pending_results: Mutex<HashMap<String, oneshot::Sender<Result<Payload, String>>>>,
    /// Set once the read loop runs: client results need it to receive the answer.
    reading: AtomicBool,
    /// Stateful reconnect bookkeeping, when the client negotiated it.
    pub(crate) replay: Option<Mutex<ReplayBuffer>>,
    /// Signalled when acks make room in the replay buffer.
    replay_room: tokio::sync::Notify,
    outbound: mpsc::Sender<Bytes>,
    closing: CancellationToken,
    close_message: Mutex<Option<Close>>,
    /// Why the transport failed, when the write side found out first.
    transport_error: Mutex<Option<String>>,
}

impl ConnectionShared {
    fn new(
        params: ConnectionParams,
        user_id: Option<Arc<str>>,
        protocol: Protocol,
        outbound: mpsc::Sender<Bytes>,
        replay: Option<ReplayBuffer>,
    ) -> Self {
        ConnectionShared {
            id: params.connection_id,
            protocol,
            transport: params.transport,
            identity: params.identity.map(Arc::new),
            user_id,
            membership: Mutex::new(Membership::default()),
            uploads: Mutex::default(),
            invocations: Mutex::default(),
            pending_results: Mutex::default(),
            reading: AtomicBool::new(false),
            replay: replay.map(Mutex::new),
            replay_room: tokio::sync::Notify::new(),
            outbound,
            closing: CancellationToken::new(),
            close_message: Mutex::new(None),
            transport_error: Mutex::new(None),
        }
    }

    /// Queues a record without waiting. A full queue means the client reads slower than we
    /// produce: it is closed rather than allowed to grow memory or stall the sender.
    pub(crate) fn try_send(&self, record: Bytes) -> Result<(), Error> {
        match self.outbound.try_send(record) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::new(Kind::Closed)),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(connection = %self.id, "outbound queue full; closing slow client");
                self.close(Close {
                    error: Some(CLOSED_WITH_ERROR.into()),
                    allow_reconnect: true,
                });
                Err(Error::with(Kind::Timeout, "outbound queue full"))
            }
        }
    }

    /// Queues a record, waiting up to `timeout` for space; a client that stays full that long
    /// is closed.
    pub(crate) async fn send(&self, record: Bytes, timeout: Duration) -> Result<(), Error> {
        if self.closing.is_cancelled() {
            return Err(Error::new(Kind::Closed));
        }
        // The queue usually has room: taking it directly spares a timer per record.
        let record = match self.outbound.try_send(record) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::new(Kind::Closed)),
            Err(mpsc::error::TrySendError::Full(record)) => record,
        };
        match self.outbound.send_timeout(record, timeout).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Error::new(Kind::Closed)),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                tracing::warn!(connection = %self.id, "send timed out; closing slow client");
                self.close(Close {
                    error: Some(CLOSED_WITH_ERROR.into()),
                    allow_reconnect: true,
                });
                Err(Error::with(Kind::Timeout, "send timed out"))
            }
        }
    }

    /// Starts closing: the write loop sends what is queued, then `close`, then ends the
    /// transport. The first reason given wins.
    pub(crate) fn close(&self, close: Close) {
        {
            let mut slot = self.close_message.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(close);
            }
        }
        self.closing.cancel();
    }

    /// Fires when the connection closes.
    pub(crate) fn closing_token(&self) -> CancellationToken {
        self.closing.clone()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
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
    pub(crate) fn register_upload(&self, stream_id: String, items: mpsc::Sender<UploadItem>) {
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
        invocations.insert(id.to_owned(), token);
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
    pub(crate) fn expect_result(&self, id: String) -> oneshot::Receiver<Result<Payload, String>> {
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

    pub(crate) fn is_reading(&self) -> bool {
        self.reading.load(Ordering::Acquire)
    }

    fn replay_has_room(&self) -> bool {
        self.replay.as_ref().is_none_or(|r| lock(r).has_room())
    }

    fn replay_keep(&self, record: &Bytes) {
        if let Some(replay) = &self.replay {
            lock(replay).sent(record.clone());
        }
    }

    fn replay_snapshot(&self) -> (u64, Vec<Bytes>) {
        self.replay
            .as_ref()
            .map(|r| lock(r).replay())
            .unwrap_or((1, Vec::new()))
    }

    fn ack_due(&self) -> Option<u64> {
        self.replay.as_ref().and_then(|r| lock(r).ack_due())
    }

    /// Stateful bookkeeping for a received message: `false` when it is a duplicate to drop;
    /// `Err` when the client's Sequence skipped ahead (a protocol error).
    fn track_received(&self, message: &InboundMessage) -> Result<bool, ()> {
        let Some(replay) = &self.replay else {
            return Ok(true);
        };
        match message {
            Message::Ack(id) => {
                lock(replay).acked(*id);
                self.replay_room.notify_waiters();
                Ok(false)
            }
            Message::Sequence(id) => lock(replay).sequence(*id).map(|()| false).map_err(drop),
            Message::Invocation(_)
            | Message::StreamItem(_)
            | Message::Completion(_)
            | Message::StreamInvocation(_)
            | Message::CancelInvocation(_) => Ok(lock(replay).received()),
            Message::Ping | Message::Close(_) => Ok(true),
        }
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

    /// The transport failed under the writer: remember why, and close.
    fn transport_failed(&self, error: &io::Error) {
        self.transport_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| error.to_string());
        self.close(Close::default());
    }

    fn take_transport_error(&self) -> Option<String> {
        self.transport_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn take_close_message(&self) -> Option<Close> {
        self.close_message
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
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

/// What a received message means for the read loop.
pub(crate) enum Flow {
    Continue,
    /// The client sent Close: stop reading, end gracefully.
    Stop,
}

/// Identity of a connection before it is running.
pub(crate) struct ConnectionParams {
    pub(crate) connection_id: Arc<str>,
    pub(crate) transport: TransportKind,
    pub(crate) identity: Option<Identity>,
}

/// Runs one connection to its end over any transport.
pub(crate) async fn run<I, S>(
    hub: Arc<HubShared>,
    params: ConnectionParams,
    inbound: I,
    mut sink: S,
    mut reattach: Option<mpsc::Receiver<(I, S)>>,
) where
    I: Stream<Item = io::Result<Bytes>> + Unpin + Send,
    S: TransportSink,
{
    // Fused: the close sequence may poll again after the transport reported its end.
    let mut inbound = inbound.fuse();
    let options = &hub.options;
    let mut buf = BytesMut::new();

    // Large or one-off awaits are boxed throughout: a task's future is as big as its largest
    // state, and every idle connection keeps its tasks resident.
    let handshake = Box::pin(tokio::time::timeout(
        options.handshake_timeout,
        read_handshake(&mut inbound, &mut buf, options.max_receive_message_size),
    ))
    .await;
    let request = match handshake {
        Err(_elapsed) => {
            return refuse_handshake(&mut sink, &HandshakeError::TooLarge.to_string()).await
        }
        Ok(None) => return sink.close().await,
        Ok(Some(Err(e))) => {
            let mut message = e.to_string();
            if let (true, HandshakeError::Malformed(detail)) = (options.enable_detailed_errors, &e)
            {
                message = format!("{message} InvalidDataException: {detail}");
            }
            return refuse_handshake(&mut sink, &message).await;
        }
        Ok(Some(Ok(request))) => request,
    };
    let protocol = match hub.select_protocol(&request.protocol, request.version) {
        Ok(protocol) => protocol,
        Err(message) => return refuse_handshake(&mut sink, &message).await,
    };
    let format = protocol.transfer_format();
    if !sink.supports(format) {
        let message = format!(
            "Cannot use the '{}' protocol on the current transport. The transport does not support '{}' transfer format.",
            protocol.name(),
            format.as_str()
        );
        return refuse_handshake(&mut sink, &message).await;
    }
    sink.set_transfer_format(format);
    if write_now(&mut sink, encode_handshake_response(None))
        .await
        .is_err()
    {
        return sink.close().await;
    }

    // Stateful reconnect: negotiated (the transport can re-attach) and asked for with a
    // version 2 handshake; a version 1 handshake turns it off silently, as in the reference.
    if request.version < 2 {
        reattach = None;
    }
    let replay = reattach
        .is_some()
        .then(|| ReplayBuffer::new(options.stateful_reconnect_buffer_size));

    let (tx, rx) = mpsc::channel(options.outbound_queue_capacity.max(1));
    let outbound: SharedOutbound = Arc::new(tokio::sync::Mutex::new(rx));
    let user_id = params.identity.as_ref().and_then(|i| hub.user_id_of(i));
    let conn = Arc::new(ConnectionShared::new(params, user_id, protocol, tx, replay));
    hub.register(&conn).await;
    let keep_alive = sink
        .needs_keep_alive()
        .then_some(options.keep_alive_interval);
    // A child of `closing`: closing ends every session, so the loops wait on this one token.
    let mut session = conn.closing.child_token();
    let mut writer = tokio::spawn(write_loop(
        conn.clone(),
        outbound.clone(),
        sink,
        keep_alive,
        options.send_timeout,
        session.clone(),
        false,
    ));
    tracing::debug!(connection = %conn.id, %protocol, stateful = reattach.is_some(), "connected");
    if hub.options.close_on_authentication_expiration {
        if let Some(expires_at) = conn.identity.as_ref().and_then(|i| i.expires_at()) {
            tokio::spawn(close_at_expiry(conn.clone(), expires_at));
        }
    }

    let end = match Box::pin(hub.on_connected(&conn)).await {
        Err(message) => {
            conn.close(Close {
                error: Some(message.clone()),
                allow_reconnect: false,
            });
            ReadEnd::Failed(message)
        }
        Ok(()) => {
            conn.reading.store(true, Ordering::Release);
            let mut dispatcher = hub.dispatcher(&conn);
            let mut buf = Some(buf);
            loop {
                let read = read_loop(
                    &hub,
                    &conn,
                    &mut dispatcher,
                    &mut inbound,
                    buf.take().unwrap_or_default(),
                    &session,
                );
                let replacement = next_transport(&mut reattach);
                let (end, next) = tokio::select! {
                    end = read => (Some(end), None),
                    next = replacement => (None, next),
                };
                let next = match (end, next) {
                    // The client reconnected while the old socket still looked open.
                    (None, Some(next)) => next,
                    (Some(ReadEnd::Failed(error)), None)
                        if reattach.is_some() && !conn.is_closing() =>
                    {
                        // Stateful: the transport dropped; keep everything for the grace period.
                        tracing::debug!(connection = %conn.id, %error, "transport lost; waiting for a reconnect");
                        session.cancel();
                        let grace = options.disconnect_timeout;
                        match tokio::time::timeout(grace, next_transport(&mut reattach)).await {
                            Ok(Some(next)) => next,
                            _ => break ReadEnd::Failed(error),
                        }
                    }
                    (Some(end), _) => break end,
                    (None, None) => break ReadEnd::Ended,
                };
                session.cancel();
                let _ = (&mut writer).await;
                tracing::debug!(connection = %conn.id, "transport re-attached");
                let (next_inbound, mut next_sink) = next;
                // The new socket speaks the format the handshake chose on the first one.
                next_sink.set_transfer_format(format);
                inbound = next_inbound.fuse();
                session = conn.closing.child_token();
                writer = tokio::spawn(write_loop(
                    conn.clone(),
                    outbound.clone(),
                    next_sink,
                    keep_alive,
                    options.send_timeout,
                    session.clone(),
                    true,
                ));
            }
        }
    };

    hub.unregister(&conn);
    conn.close(Close::default());
    conn.end_calls();
    // Bounded: every write inside the writer has a timeout.
    let _ = writer.await;
    let disconnect_error = match end {
        // A client that said goodbye ended gracefully, whatever its transport did next.
        ReadEnd::ClientClosed(error) => error,
        ReadEnd::Failed(error) => Some(error),
        ReadEnd::Ended => conn.take_transport_error(),
    };
    tracing::debug!(connection = %conn.id, error = ?disconnect_error, "disconnected");
    Box::pin(hub.on_disconnected(&conn, disconnect_error)).await;
    // Keep reading (and discarding) briefly so the transport can finish its close handshake.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = inbound.next().await {}
    })
    .await;
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
            tracing::debug!(connection = %conn.id, "authentication expired");
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

/// Reads until a whole handshake request arrived. `None` when the client went away first.
async fn read_handshake<I>(
    inbound: &mut I,
    buf: &mut BytesMut,
    max_size: usize,
) -> Option<Result<crate::protocol::HandshakeRequest, HandshakeError>>
where
    I: Stream<Item = io::Result<Bytes>> + Unpin,
{
    loop {
        match decode_handshake_request(buf, max_size) {
            Ok(Some(request)) => return Some(Ok(request)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        match inbound.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(_)) | None => return None,
        }
    }
}

async fn refuse_handshake<S: TransportSink>(sink: &mut S, message: &str) {
    tracing::debug!(%message, "handshake refused");
    let _ = write_now(sink, encode_handshake_response(Some(message))).await;
    sink.close().await;
}

async fn write_now<S: TransportSink>(sink: &mut S, record: Bytes) -> io::Result<()> {
    sink.feed(record).await?;
    sink.flush().await
}

/// The Close sent for a connection-level error: generic text, details only when enabled.
pub(crate) fn error_close(detailed: bool, detail: &str) -> Close {
    let error = if detailed {
        format!("{CLOSED_WITH_ERROR} {detail}")
    } else {
        CLOSED_WITH_ERROR.to_owned()
    };
    Close {
        error: Some(error),
        allow_reconnect: true,
    }
}

/// How the read loop ended.
enum ReadEnd {
    /// The client sent Close (with its error, if any).
    ClientClosed(Option<String>),
    /// The transport ended, or the server closed the connection.
    Ended,
    /// A protocol error or timeout.
    Failed(String),
}

enum Received {
    Chunk(Bytes),
    Ended,
    Failed(String),
    TimedOut,
    Closing,
}

/// Decodes and dispatches messages until the connection ends. Returns the disconnect error,
/// if the end was not graceful.
async fn read_loop<I>(
    hub: &Arc<HubShared>,
    conn: &Arc<ConnectionShared>,
    dispatcher: &mut Dispatcher,
    inbound: &mut I,
    mut buf: BytesMut,
    session: &CancellationToken,
) -> ReadEnd
where
    I: Stream<Item = io::Result<Bytes>> + Unpin + Send,
{
    let options = &hub.options;
    // The client timeout runs from the handshake. The reference arms it only at the first
    // Ping (for clients too old to ping); but then a client that sends half a record and falls
    // silent would be held forever. Current clients ping right after the handshake.
    let timeout_armed = true;
    loop {
        loop {
            match conn
                .protocol
                .decode(&mut buf, options.max_receive_message_size)
            {
                Ok(Some(message)) => {
                    if let Message::Close(close) = message {
                        return ReadEnd::ClientClosed(close.error);
                    }
                    match conn.track_received(&message) {
                        Ok(true) => {}
                        // A duplicate resent after a reconnect, or reconnect bookkeeping.
                        Ok(false) => continue,
                        Err(()) => {
                            let text =
                                "Sequence ID greater than amount of messages we've received.";
                            conn.close(error_close(
                                options.enable_detailed_errors,
                                &format!("InvalidDataException: {text}"),
                            ));
                            return ReadEnd::Failed(text.to_owned());
                        }
                    }
                    if let Flow::Stop = Box::pin(dispatcher.dispatch(message)).await {
                        return ReadEnd::ClientClosed(None);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let detail = match &e {
                        ProtocolError::MessageTooLarge { .. } => {
                            format!("InvalidDataException: {e} The message size can be configured in AddHubOptions.")
                        }
                        _ => format!("InvalidDataException: {e}"),
                    };
                    tracing::debug!(connection = %conn.id, error = %e, "protocol error");
                    conn.close(error_close(options.enable_detailed_errors, &detail));
                    return ReadEnd::Failed(e.to_string());
                }
            }
        }

        // `session` is a child of `closing`: one wait covers both.
        let received = tokio::select! {
            _ = session.cancelled() => if conn.is_closing() {
                Received::Closing
            } else {
                Received::Failed("the transport failed".to_owned())
            },
            next = next_chunk(inbound, timeout_armed.then_some(options.client_timeout)) => next,
        };
        match received {
            Received::Chunk(chunk) => {
                if buf.is_empty() {
                    buf = chunk
                        .try_into_mut()
                        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                } else {
                    buf.extend_from_slice(&chunk);
                }
            }
            Received::Ended => return ReadEnd::Ended,
            Received::Closing => return client_close_already_received(conn, inbound, buf),
            Received::Failed(e) => return ReadEnd::Failed(e),
            Received::TimedOut => {
                let detail = "OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval.";
                conn.close(error_close(options.enable_detailed_errors, detail));
                return ReadEnd::Failed("client timeout".to_owned());
            }
        }
    }
}

/// On close, looks through input that has already arrived for the client's own Close: a client
/// that posts Close and then drops its transport (SSE, long polling) ended gracefully, even if
/// the write side noticed the dropped transport first.
fn client_close_already_received<I>(
    conn: &ConnectionShared,
    inbound: &mut I,
    mut buf: BytesMut,
) -> ReadEnd
where
    I: Stream<Item = io::Result<Bytes>> + Unpin,
{
    while let Some(Some(Ok(chunk))) = inbound.next().now_or_never() {
        buf.extend_from_slice(&chunk);
    }
    // Only what is already buffered; any size limit was enforced when it was read.
    while let Ok(Some(message)) = conn.protocol.decode(&mut buf, usize::MAX) {
        if let Message::Close(close) = message {
            return ReadEnd::ClientClosed(close.error);
        }
    }
    ReadEnd::Ended
}

async fn next_chunk<I>(inbound: &mut I, timeout: Option<Duration>) -> Received
where
    I: Stream<Item = io::Result<Bytes>> + Unpin,
{
    let next = match timeout {
        Some(limit) => match tokio::time::timeout(limit, inbound.next()).await {
            Ok(next) => next,
            Err(_) => return Received::TimedOut,
        },
        None => inbound.next().await,
    };
    match next {
        Some(Ok(chunk)) => Received::Chunk(chunk),
        Some(Err(e)) => Received::Failed(e.to_string()),
        None => Received::Ended,
    }
}

/// The outbound queue, owned by whichever session is writing; it outlives a transport that
/// drops while stateful reconnect keeps the connection.
type SharedOutbound = Arc<tokio::sync::Mutex<mpsc::Receiver<Bytes>>>;

/// How often a stateful connection acknowledges what it processed.
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Moves queued records to the transport, pings when idle, acknowledges received messages
/// (stateful reconnect), and performs the close sequence.
///
/// Every write is bounded by `send_timeout` (the reference's `TransportSendTimeout`): a client
/// that stops reading cannot hold this task, its socket and its queue forever. When `session`
/// is cancelled the transport is abandoned (it dropped, or a reconnect replaced it) and the
/// queue is left for the next session; with `resume`, this session starts by replaying what
/// the client has not acknowledged.
async fn write_loop<S: TransportSink>(
    conn: Arc<ConnectionShared>,
    outbound: SharedOutbound,
    mut sink: S,
    keep_alive: Option<Duration>,
    send_timeout: Duration,
    session: CancellationToken,
    resume: bool,
) {
    let mut rx = outbound.lock().await;
    let ping = conn.protocol.ping_record();
    // One interval per connection; ticks are skipped while other traffic flows (the reference
    // pings on a fixed cadence; sparing busy connections the extra frames costs nothing).
    let period = keep_alive.unwrap_or(Duration::from_secs(3600));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stateful = conn.replay.is_some();
    // Only stateful connections acknowledge; the others carry no timer for it.
    let ack_period = if stateful {
        ACK_INTERVAL
    } else {
        Duration::from_secs(86_400)
    };
    let mut acks = tokio::time::interval_at(Instant::now() + ack_period, ack_period);
    acks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_write = Instant::now();

    let gone = sink.gone();
    tokio::pin!(gone);
    let result: io::Result<()> = async {
        if resume {
            // The client ignores everything until this Sequence, then takes the replay.
            let (first, records) = conn.replay_snapshot();
            within(send_timeout, async {
                let sequence = conn
                    .protocol
                    .encode_to_bytes(&Message::<NoValue, NoValue>::Sequence(first))
                    .map_err(io::Error::other)?;
                sink.feed(sequence).await?;
                for record in records {
                    sink.feed(record).await?;
                }
                sink.flush().await
            })
            .await?;
        }
        loop {
            let room = conn.replay_has_room();
            tokio::select! {
                biased;
                // Also fires on closing: `session` is its child.
                _ = session.cancelled() => return Ok(()),
                // The client left (an SSE request it aborted): a normal end, as in the reference.
                _ = &mut gone => {
                    conn.close(Close::default());
                    return Ok(());
                }
                // Stateful: past the buffer limit, sends wait for the client's acks.
                _ = conn.replay_room.notified(), if !room => {}
                record = rx.recv(), if room => {
                    let Some(record) = record else { return Ok(()) };
                    within(send_timeout, async {
                        conn.replay_keep(&record);
                        sink.feed(record).await?;
                        for _ in 0..MAX_BATCH {
                            if !conn.replay_has_room() {
                                break;
                            }
                            match rx.try_recv() {
                                Ok(record) => {
                                    conn.replay_keep(&record);
                                    sink.feed(record).await?
                                }
                                Err(_) => break,
                            }
                        }
                        sink.flush().await
                    })
                    .await?;
                    last_write = Instant::now();
                }
                _ = acks.tick(), if stateful => {
                    if let Some(id) = conn.ack_due() {
                        let ack = conn
                            .protocol
                            .encode_to_bytes(&Message::<NoValue, NoValue>::Ack(id))
                            .map_err(io::Error::other)?;
                        within(send_timeout, write_now(&mut sink, ack)).await?;
                    }
                }
                _ = ticker.tick(), if keep_alive.is_some() => {
                    if last_write.elapsed() >= period {
                        within(send_timeout, write_now(&mut sink, ping.clone())).await?;
                        last_write = Instant::now();
                    }
                }
            }
        }
    }
    .await;

    if session.is_cancelled() && !conn.is_closing() {
        // This transport is done; the connection waits for the next one.
        return;
    }
    if let Err(error) = result {
        if stateful {
            // Keep the connection: end this session only, and wait for a reconnect.
            session.cancel();
            return;
        }
        // The transport failed: make sure the read side stops too.
        conn.transport_failed(&error);
    } else {
        let close = conn.take_close_message().unwrap_or_default();
        let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, async {
            rx.close();
            while let Some(record) = rx.recv().await {
                sink.feed(record).await?;
            }
            let record = conn
                .protocol
                .encode_to_bytes(&Message::<NoValue, NoValue>::Close(close))
                .map_err(io::Error::other)?;
            write_now(&mut sink, record).await
        }))
        .await;
    }
    let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, sink.close())).await;
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
    tokio::time::timeout(limit, write)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out")))
}
