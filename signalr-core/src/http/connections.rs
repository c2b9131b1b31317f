//! Connections as the HTTP layer knows them: a token issued by negotiate, which transport it is
//! bound to, and the inbound channel that POSTs feed (for SSE and long polling).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::shrink::Shrinker;
use crate::transport::long_polling::PollQueue;
use crate::transport::websocket::{WsSink, WsStream};
use crate::transport::TransportKind;

/// Received chunks waiting for the connection core. Small: a POST that outruns the hub waits
/// (its 200 is delayed), which is the backpressure the reference applies too.
const INBOUND_CHUNKS: usize = 8;

/// Which transport a token is bound to.
#[derive(Clone)]
pub(crate) enum Binding {
    /// Negotiated; no transport request yet.
    Pending,
    WebSockets,
    ServerSentEvents,
    LongPolling(Arc<PollQueue>),
    /// The connection ended; the token only answers "finished" until it is forgotten.
    Closed(Option<Arc<PollQueue>>),
}

impl Binding {
    pub(crate) fn transport(&self) -> Option<TransportKind> {
        match self {
            Binding::Pending | Binding::Closed(_) => None,
            Binding::WebSockets => Some(TransportKind::WebSockets),
            Binding::ServerSentEvents => Some(TransportKind::ServerSentEvents),
            Binding::LongPolling(_) => Some(TransportKind::LongPolling),
        }
    }
}

/// A new WebSocket for a stateful connection whose socket dropped.
pub(crate) type Reattach = (WsStream, WsSink);

pub(crate) struct HttpConnection {
    pub(crate) connection_id: Arc<str>,
    /// Negotiate granted stateful reconnect.
    pub(crate) stateful: bool,
    /// Where a reconnecting client's new WebSocket goes, while the connection runs.
    reattach: Mutex<Option<mpsc::Sender<Reattach>>>,
    binding: Mutex<Binding>,
    /// POSTs send here; a tokio mutex serializes POSTs per connection, like the reference.
    inbound_tx: tokio::sync::Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Taken by the transport that starts the connection core.
    inbound_rx: Mutex<Option<mpsc::Receiver<Bytes>>>,
    /// Why the client-to-server stream broke off, for the connection core to read once it
    /// has read everything that came before (see [`HttpConnection::break_inbound`]).
    broken: Mutex<Option<std::io::Error>>,
}

/// Why a transport request cannot bind to a connection.
pub(crate) enum BindRefusal {
    /// The same transport is already serving it (409).
    InUse,
    /// Another transport serves it (400).
    OtherTransport,
    /// It has ended.
    Gone,
}

impl HttpConnection {
    fn new(connection_id: Arc<str>, stateful: bool) -> Self {
        let (tx, rx) = mpsc::channel(INBOUND_CHUNKS);
        HttpConnection {
            connection_id,
            stateful,
            reattach: Mutex::new(None),
            binding: Mutex::new(Binding::Pending),
            inbound_tx: tokio::sync::Mutex::new(Some(tx)),
            inbound_rx: Mutex::new(Some(rx)),
            broken: Mutex::new(None),
        }
    }

    pub(crate) fn binding(&self) -> Binding {
        self.binding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Binds a pending connection to `binding`'s transport.
    fn bind(&self, binding: Binding) -> Result<(), BindRefusal> {
        let mut current = self.binding.lock().unwrap_or_else(|p| p.into_inner());
        match &*current {
            Binding::Pending => {
                *current = binding;
                Ok(())
            }
            Binding::Closed(_) => Err(BindRefusal::Gone),
            bound if bound.transport() == binding.transport() => Err(BindRefusal::InUse),
            _ => Err(BindRefusal::OtherTransport),
        }
    }

    pub(crate) fn mark_closed(&self) {
        let mut current = self.binding.lock().unwrap_or_else(|p| p.into_inner());
        let queue = match &*current {
            Binding::LongPolling(queue) => Some(queue.clone()),
            _ => None,
        };
        *current = Binding::Closed(queue);
        // Nobody will read again: waiting POSTs fail instead of hanging.
        self.inbound_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Opens the re-attach channel of a stateful WebSocket connection.
    pub(crate) fn accept_reattach(&self) -> mpsc::Receiver<Reattach> {
        let (tx, rx) = mpsc::channel(1);
        *self.reattach.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Where a reconnecting client's socket goes, if the connection is still waiting for one.
    pub(crate) fn reattach_sender(&self) -> Option<mpsc::Sender<Reattach>> {
        self.reattach
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|tx| !tx.is_closed())
    }

    /// Frees the POST channel of a connection that will never use it (WebSockets).
    pub(crate) fn release_inbound(&self) {
        self.take_inbound();
        if let Ok(mut sender) = self.inbound_tx.try_lock() {
            sender.take();
        }
    }

    pub(crate) fn take_inbound(&self) -> Option<mpsc::Receiver<Bytes>> {
        self.inbound_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(crate) fn inbound_sender(&self) -> &tokio::sync::Mutex<Option<mpsc::Sender<Bytes>>> {
        &self.inbound_tx
    }

    /// Ends the client-to-server stream with `error`, given the POST `sender` it takes: the
    /// connection core reads what was sent before, then the error, and closes on it.
    pub(crate) fn break_inbound(
        &self,
        sender: &mut Option<mpsc::Sender<Bytes>>,
        error: std::io::Error,
    ) {
        // Stored before the channel closes, so the core finds it when it sees the end.
        *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        sender.take();
    }

    /// Why the stream broke off, once (see [`break_inbound`](Self::break_inbound)).
    pub(crate) fn take_broken(&self) -> Option<std::io::Error> {
        self.broken.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Ends the client-to-server stream: the connection core sees the end and closes
    /// gracefully (DELETE, or a long-polling client that stopped polling).
    pub(crate) async fn end_inbound(&self) {
        self.inbound_tx.lock().await.take();
    }
}

/// Every connection token this hub has issued and not yet forgotten.
#[derive(Default)]
pub(crate) struct HttpConnections {
    by_token: DashMap<String, Arc<HttpConnection>>,
    /// Tokens still waiting for their transport.
    pending: AtomicUsize,
    /// Gives the map's capacity back after a burst (see `crate::shrink`).
    shrinker: Shrinker,
}

impl HttpConnections {
    pub(crate) fn insert(
        &self,
        token: String,
        connection_id: Arc<str>,
        stateful: bool,
    ) -> Arc<HttpConnection> {
        let connection = Arc::new(HttpConnection::new(connection_id, stateful));
        self.by_token.insert(token, connection.clone());
        self.pending.fetch_add(1, Ordering::Relaxed);
        connection
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Binds the connection to a transport (see [`HttpConnection::bind`]).
    pub(crate) fn bind(
        &self,
        connection: &HttpConnection,
        binding: Binding,
    ) -> Result<(), BindRefusal> {
        connection.bind(binding)?;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<HttpConnection>> {
        self.by_token.get(token).map(|entry| entry.value().clone())
    }

    pub(crate) fn remove(&self, token: &str) {
        if let Some((_, connection)) = self.by_token.remove(token) {
            connection.mark_closed();
            self.shrinker.removed(&self.by_token);
        }
    }

    /// Forgets a token whose transport never arrived.
    pub(crate) fn remove_if_pending(&self, token: &str) {
        let removed = self
            .by_token
            .remove_if(token, |_, c| matches!(c.binding(), Binding::Pending));
        if let Some((_, connection)) = removed {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            connection.mark_closed();
            self.shrinker.removed(&self.by_token);
        }
    }
}
