//! An in-process test kit (feature `test-util`): hub behaviour without sockets.
//!
//! [`TestClient`] connects to a [`Hub`] over an in-memory transport and speaks either hub
//! protocol through the same connection core a real socket gets: the handshake, limits,
//! keep-alive, timeouts, dispatch, filters and hooks all run exactly as in production. It
//! suits an application's own tests as well as ours, and runs under tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`), so that "idle for an hour" takes milliseconds.
//!
//! ```
//! use signalr_core::test_util::TestClient;
//! use signalr_core::Hub;
//!
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::builder().method("Add", add).build();
//! let mut client = TestClient::connect(&hub).await.unwrap();
//! let sum: i64 = client.invoke("Add", (2, 3)).await.unwrap();
//! assert_eq!(sum, 5);
//! # }
//! ```
//!
//! Every wait in the kit is unbounded: wrap a call in `tokio::time::timeout` where a test
//! must fail rather than hang.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::auth::Identity;
use crate::connection::{self, ConnectionParams};
use crate::hub::{Hub, IntoArguments};
use crate::id::new_id;
use crate::protocol::{
    Arguments, Close, CompletionResult, InputBuffer, Invocation, Message, NoValue, Payload,
    Protocol, TransferFormat,
};
use crate::request::HttpRequest;
use crate::transport::{TransportKind, TransportSink};

/// A message the server sent, as the kit decodes it.
pub type ServerMessage = Message<Arguments, Payload>;

/// Records the server may queue for a client before its writes wait.
const RECORDS_BUFFERED: usize = 1024;

/// How a [`TestClient`] connects: protocol, the transport whose rules apply, identity.
#[derive(Debug, Clone)]
pub struct TestClientBuilder {
    protocol: Protocol,
    transport: TransportKind,
    identity: Option<Identity>,
    handshake_version: Option<u32>,
    stateful: bool,
    request: Option<HttpRequest>,
}

impl TestClientBuilder {
    /// Asks for stateful reconnect (Ack and Sequence bookkeeping), as a client that negotiated
    /// it would. The in-memory transport never drops, so nothing is ever replayed.
    pub fn stateful(mut self, stateful: bool) -> Self {
        self.stateful = stateful;
        self
    }

    /// The hub protocol to speak. Default JSON.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Which transport's rules the connection follows (long polling: no Pings and no client
    /// timeout; Server-Sent Events: text protocols only). Default WebSockets.
    pub fn transport(mut self, transport: TransportKind) -> Self {
        self.transport = transport;
        self
    }

    /// Who the connection belongs to, as an authenticator would have said.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The HTTP request the connection was "made with", as `Context::http_request` shows it
    /// (headers, cookies, query string, extensions; see [`HttpRequest::from_request`]).
    pub fn request(mut self, request: HttpRequest) -> Self {
        self.request = Some(request);
        self
    }

    /// Sends this protocol version in the handshake instead of the protocol's own.
    pub fn handshake_version(mut self, version: u32) -> Self {
        self.handshake_version = Some(version);
        self
    }

    /// Opens the connection and completes the handshake; `Err` carries the server's refusal.
    pub async fn connect(self, hub: &Hub) -> Result<TestClient, String> {
        let (to_server, inbound) = mpsc::channel(RECORDS_BUFFERED);
        let (records, from_server) = mpsc::channel(RECORDS_BUFFERED);
        let connection_id: Arc<str> = new_id().into();
        let params = ConnectionParams {
            connection_id: connection_id.clone(),
            transport: self.transport,
            identity: self.identity,
            request: self.request.map(Arc::new),
        };
        let sink = MemorySink {
            records,
            pending: Vec::new(),
            transport: self.transport,
        };
        let (reattach, reattached) = match self.stateful {
            true => {
                let (sender, receiver) = mpsc::channel(1);
                (Some(sender), Some(receiver))
            }
            false => (None, None),
        };
        tokio::spawn(connection::run(
            hub.shared().clone(),
            params,
            MemoryStream(inbound),
            sink,
            reattached,
        ));
        let mut client = TestClient {
            protocol: self.protocol,
            to_server,
            from_server,
            input: InputBuffer::new(),
            received: VecDeque::new(),
            next_invocation_id: 0,
            connection_id: connection_id.to_string(),
            _reattach: reattach,
        };
        let version = self.handshake_version.unwrap_or(self.protocol.version());
        let request = serde_json::json!({ "protocol": self.protocol.name(), "version": version });
        client.send_bytes(format!("{request}\u{1e}")).await;
        let response = client
            .next_record()
            .await
            .ok_or("the server closed the transport")?;
        #[derive(serde::Deserialize)]
        struct HandshakeResponse {
            error: Option<String>,
        }
        let json = response.strip_suffix(b"\x1e").unwrap_or(&response);
        match serde_json::from_slice::<HandshakeResponse>(json) {
            Ok(HandshakeResponse { error: None }) => Ok(client),
            Ok(HandshakeResponse { error: Some(error) }) => Err(error),
            Err(error) => Err(format!("malformed handshake response: {error}")),
        }
    }
}

/// A client connected to a hub in process. See the [module docs](self).
pub struct TestClient {
    protocol: Protocol,
    to_server: mpsc::Sender<io::Result<Bytes>>,
    from_server: mpsc::Receiver<Bytes>,
    input: InputBuffer,
    /// Decoded messages not yet asked for.
    received: VecDeque<ServerMessage>,
    next_invocation_id: u64,
    connection_id: String,
    /// Held so that a stateful connection keeps waiting for a reconnect that never comes.
    _reattach: Option<mpsc::Sender<(MemoryStream, MemorySink)>>,
}

impl TestClient {
    /// How to connect, with every choice at its default (JSON, WebSocket rules).
    pub fn builder() -> TestClientBuilder {
        TestClientBuilder {
            protocol: Protocol::Json,
            transport: TransportKind::WebSockets,
            identity: None,
            handshake_version: None,
            stateful: false,
            request: None,
        }
    }

    /// Connects with the defaults.
    pub async fn connect(hub: &Hub) -> Result<TestClient, String> {
        Self::builder().connect(hub).await
    }

    /// The id the hub knows this connection by (`Context::connection_id`).
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// Calls a hub method and waits for its Completion: `Ok` with the value, `Err` with the
    /// error text the client would see. Messages that arrive meanwhile are kept for
    /// [`recv`](Self::recv).
    pub async fn invoke<T: DeserializeOwned>(
        &mut self,
        target: &str,
        arguments: impl IntoArguments,
    ) -> Result<T, String> {
        let id = self.invocation_id();
        self.send_invocation(Some(id.clone()), target, arguments, false)
            .await;
        loop {
            match self.take_matching(&id).await {
                None => return Err("the connection closed before the completion".to_owned()),
                Some(Message::Completion(completion)) => {
                    return match completion.result {
                        CompletionResult::Value(value) => value
                            .deserialize()
                            .map_err(|e| format!("unexpected result: {e}")),
                        CompletionResult::Void => Payload::null(self.protocol)
                            .deserialize()
                            .map_err(|e| format!("unexpected result: {e}")),
                        CompletionResult::Error(error) => Err(error),
                    }
                }
                Some(_) => continue,
            }
        }
    }

    /// Calls a streaming hub method and collects every item until the stream completes.
    pub async fn stream<T: DeserializeOwned>(
        &mut self,
        target: &str,
        arguments: impl IntoArguments,
    ) -> Result<Vec<T>, String> {
        let id = self.invocation_id();
        self.send_invocation(Some(id.clone()), target, arguments, true)
            .await;
        let mut items = Vec::new();
        loop {
            match self.take_matching(&id).await {
                None => return Err("the connection closed before the completion".to_owned()),
                Some(Message::StreamItem(item)) => items.push(
                    item.item
                        .deserialize()
                        .map_err(|e| format!("unexpected item: {e}"))?,
                ),
                Some(Message::Completion(completion)) => {
                    return match completion.result {
                        CompletionResult::Error(error) => Err(error),
                        _ => Ok(items),
                    }
                }
                Some(_) => continue,
            }
        }
    }

    /// Calls a hub method without waiting (a non-blocking invocation: no Completion comes).
    pub async fn send(&mut self, target: &str, arguments: impl IntoArguments) {
        self.send_invocation(None, target, arguments, false).await;
    }

    /// The next message from the server (Pings included), or `None` once the connection is
    /// over and everything was read.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        if let Some(message) = self.received.pop_front() {
            return Some(message);
        }
        self.read_message().await
    }

    /// The next client-method invocation from the server, skipping Pings: its target and
    /// arguments. `None` once the connection is over.
    pub async fn recv_invocation(&mut self) -> Option<(String, Arguments)> {
        loop {
            match self.recv().await? {
                Message::Invocation(invocation) => {
                    return Some((invocation.target.into_string(), invocation.arguments))
                }
                Message::Ping => continue,
                other => self.received.push_back(other),
            }
        }
    }

    /// Reads until the server closes: its Close message, if it sent one.
    pub async fn closed(&mut self) -> Option<Close> {
        let mut close = None;
        while let Some(message) = self.recv().await {
            if let Message::Close(message) = message {
                close = Some(message);
            }
        }
        close
    }

    /// Sends any message, encoded in the connection's protocol.
    pub async fn send_message<A: serde::Serialize, V: serde::Serialize>(
        &mut self,
        message: &Message<A, V>,
    ) {
        let record = self
            .protocol
            .encode_to_bytes(message)
            .expect("a message the client builds encodes");
        self.send_bytes(record).await;
    }

    /// Sends raw bytes as the transport would carry them (any chunking).
    pub async fn send_bytes(&mut self, bytes: impl Into<Bytes>) {
        // A server that has gone simply no longer reads.
        let _ = self.to_server.send(Ok(bytes.into())).await;
    }

    /// Says goodbye (a Close message) and waits for the server to end the connection.
    pub async fn close(mut self) {
        self.send_message(&Message::<NoValue, NoValue>::Close(Close::default()))
            .await;
        while self.recv().await.is_some() {}
    }

    /// Drops the transport without a Close, as a client whose network fails.
    pub fn abort(self) {}

    fn invocation_id(&mut self) -> String {
        self.next_invocation_id += 1;
        self.next_invocation_id.to_string()
    }

    async fn send_invocation(
        &mut self,
        invocation_id: Option<String>,
        target: &str,
        arguments: impl IntoArguments,
        streaming: bool,
    ) {
        let invocation = Invocation {
            headers: Default::default(),
            invocation_id: invocation_id.map(Into::into),
            target: target.into(),
            arguments: arguments.into_arguments(),
            stream_ids: Vec::new(),
        };
        let message = if streaming {
            Message::<_, NoValue>::StreamInvocation(invocation)
        } else {
            Message::Invocation(invocation)
        };
        self.send_message(&message).await;
    }

    /// The next StreamItem or Completion for `id`; anything else is kept for `recv`.
    async fn take_matching(&mut self, id: &str) -> Option<ServerMessage> {
        let matches = |message: &ServerMessage| match message {
            Message::Completion(c) => c.invocation_id == id,
            Message::StreamItem(item) => item.invocation_id == id,
            _ => false,
        };
        if let Some(index) = self.received.iter().position(matches) {
            return self.received.remove(index);
        }
        loop {
            let message = self.read_message().await?;
            if matches(&message) {
                return Some(message);
            }
            self.received.push_back(message);
        }
    }

    async fn read_message(&mut self) -> Option<ServerMessage> {
        loop {
            if let Some(message) = self
                .protocol
                .decode(&mut self.input, usize::MAX)
                .expect("the server sends well-formed records")
            {
                return Some(message);
            }
            let record = self.next_record().await?;
            self.input.extend_from_slice(&record);
        }
    }

    async fn next_record(&mut self) -> Option<Bytes> {
        self.from_server.recv().await
    }
}

/// What the client sends, as the stream of chunks the connection core reads.
struct MemoryStream(mpsc::Receiver<io::Result<Bytes>>);

impl futures_util::Stream for MemoryStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Hands each flushed record to the client; dropping it ends the client's reads.
struct MemorySink {
    records: mpsc::Sender<Bytes>,
    pending: Vec<Bytes>,
    transport: TransportKind,
}

impl TransportSink for MemorySink {
    fn supports(&self, format: TransferFormat) -> bool {
        self.transport.transfer_formats().contains(&format)
    }

    fn set_transfer_format(&mut self, _format: TransferFormat) {}

    async fn feed(&mut self, record: Bytes) -> io::Result<()> {
        self.pending.push(record);
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        for record in self.pending.drain(..) {
            self.records
                .send(record)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client is gone"))?;
        }
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.flush().await;
        let (closed, _) = mpsc::channel(1);
        self.records = closed;
    }
}
