//! Hub options. Defaults match ASP.NET Core SignalR (`HubOptions`,
//! `HttpConnectionDispatcherOptions`) unless a field's doc says why we chose otherwise.

use std::time::Duration;

use crate::protocol::Protocol;
use crate::transport::TransportKind;

/// Everything configurable about a hub, with its defaults: the one place they are
/// documented. Set fields one by one on [`HubBuilder`](crate::HubBuilder), or all at once with
/// [`HubBuilder::options`](crate::HubBuilder::options); read them back with
/// [`Hub::options`](crate::Hub::options). New options may be added in any release, so the
/// struct is built from `HubOptions::default()`:
///
/// ```
/// use std::time::Duration;
/// use signalr_core::{Hub, HubOptions};
///
/// let mut options = HubOptions::default();
/// options.keep_alive_interval = Duration::from_secs(10);
/// options.client_timeout = Duration::from_secs(20);
/// let hub = Hub::builder().options(options).build();
/// assert_eq!(hub.options().client_timeout, Duration::from_secs(20));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct HubOptions {
    /// Time a client has to send its handshake after the transport opens. Default 15 s.
    pub handshake_timeout: Duration,
    /// A Ping is sent when nothing was written to a connection for this long (not on long
    /// polling, where each poll is its own keep-alive). Default 15 s.
    pub keep_alive_interval: Duration,
    /// Close a connection when no complete message arrives for this long, counted from the
    /// handshake and then from the last complete message (the reference waits for the first
    /// Ping). Not on long polling: a client that stops polling is let go after the
    /// disconnect timeout instead. Default 30 s.
    pub client_timeout: Duration,
    /// Largest record a client may send, in bytes; larger ones close the connection.
    /// Default 32 KiB.
    pub max_receive_message_size: usize,
    /// Put exception details in error Completions and Close messages. Default off.
    pub enable_detailed_errors: bool,
    /// Non-streaming invocations one client may run at once. Default 1.
    pub max_parallel_invocations: usize,
    /// Frames that may wait in one connection's outbound queue. Default 1,024.
    pub outbound_queue_capacity: usize,
    /// How long a send to one client waits for queue space before the client is dropped as
    /// too slow (`TransportSendTimeout`). Default 10 s.
    pub send_timeout: Duration,
    /// How long a negotiated connection may wait for its transport. Default 15 s.
    pub disconnect_timeout: Duration,
    /// How long graceful shutdown waits for clients to go. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Protocols offered to clients. Default: every one this build has ([`Protocol::ALL`]:
    /// JSON, and MessagePack with the `msgpack` feature).
    pub protocols: Vec<Protocol>,
    /// Transports offered in negotiate and served. Default: all three.
    pub transports: Vec<TransportKind>,
    /// How long a long poll waits for data before answering empty. Default 90 s.
    pub long_poll_timeout: Duration,
    /// Bytes that may wait for the next long poll before sends wait. Default 1 MiB.
    pub long_poll_buffer: usize,
    /// Origins allowed to call from browsers (CORS with credentials); `*` allows any origin.
    /// Default: none (same-origin only).
    pub cors_origins: Vec<String>,
    /// Negotiated connections that may wait for their transport at once; past it negotiate
    /// answers 503. Default 100,000.
    pub max_pending_negotiations: usize,
    /// Items buffered per upload stream before the server stops reading from that client
    /// (`StreamBufferCapacity`). Default 10.
    pub stream_buffer_capacity: usize,
    /// How long `ClientProxy::invoke` waits for a client's result. Default 30 s (the reference
    /// waits as long as its cancellation token allows).
    pub client_result_timeout: Duration,
    /// Offer stateful reconnect to clients that ask (`AllowStatefulReconnects`). Default off.
    pub allow_stateful_reconnect: bool,
    /// Bytes of sent, unacknowledged messages kept for replay; past it sends wait for acks.
    /// Default 100,000 (`StatefulReconnectBufferSize`).
    pub stateful_reconnect_buffer_size: usize,
    /// Close connections when their identity's credentials expire. Default off.
    pub close_on_authentication_expiration: bool,
    /// The most a WebSocket read takes from the socket at once. Reads land in a buffer of the
    /// thread's, so this costs no memory per connection; a connection buffers received bytes of
    /// its own only for a frame that has not fully arrived, and none when idle. Default 4 KiB.
    pub websocket_read_buffer_size: usize,
    /// Bytes buffered before a WebSocket write is pushed to the socket. Default 8 KiB.
    pub websocket_write_buffer_size: usize,
    /// Signs connection tokens so that every process holding the key accepts them. Default
    /// none (random tokens, valid on the negotiating process only, as in the reference). Set
    /// with [`HubBuilder::portable_connection_tokens`](crate::HubBuilder::portable_connection_tokens);
    /// never printed.
    pub(crate) portable_token_key: Option<std::sync::Arc<[u8]>>,
}

/// Every option but the token key, which is a secret.
impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("client_timeout", &self.client_timeout)
            .field("max_receive_message_size", &self.max_receive_message_size)
            .field("enable_detailed_errors", &self.enable_detailed_errors)
            .field("max_parallel_invocations", &self.max_parallel_invocations)
            .field("outbound_queue_capacity", &self.outbound_queue_capacity)
            .field("send_timeout", &self.send_timeout)
            .field("disconnect_timeout", &self.disconnect_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("protocols", &self.protocols)
            .field("transports", &self.transports)
            .field("long_poll_timeout", &self.long_poll_timeout)
            .field("long_poll_buffer", &self.long_poll_buffer)
            .field("cors_origins", &self.cors_origins)
            .field("max_pending_negotiations", &self.max_pending_negotiations)
            .field("stream_buffer_capacity", &self.stream_buffer_capacity)
            .field("client_result_timeout", &self.client_result_timeout)
            .field("allow_stateful_reconnect", &self.allow_stateful_reconnect)
            .field(
                "stateful_reconnect_buffer_size",
                &self.stateful_reconnect_buffer_size,
            )
            .field(
                "close_on_authentication_expiration",
                &self.close_on_authentication_expiration,
            )
            .field(
                "websocket_read_buffer_size",
                &self.websocket_read_buffer_size,
            )
            .field(
                "websocket_write_buffer_size",
                &self.websocket_write_buffer_size,
            )
            .field(
                "portable_token_key",
                &self.portable_token_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            handshake_timeout: Duration::from_secs(15),
            keep_alive_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            max_receive_message_size: 32 * 1024,
            enable_detailed_errors: false,
            max_parallel_invocations: 1,
            outbound_queue_capacity: 1024,
            send_timeout: Duration::from_secs(10),
            disconnect_timeout: Duration::from_secs(15),
            shutdown_timeout: Duration::from_secs(5),
            protocols: Protocol::ALL.to_vec(),
            transports: TransportKind::ALL.to_vec(),
            long_poll_timeout: Duration::from_secs(90),
            long_poll_buffer: 1024 * 1024,
            cors_origins: Vec::new(),
            max_pending_negotiations: 100_000,
            close_on_authentication_expiration: false,
            allow_stateful_reconnect: false,
            stateful_reconnect_buffer_size: 100_000,
            stream_buffer_capacity: 10,
            client_result_timeout: Duration::from_secs(30),
            websocket_read_buffer_size: 4 * 1024,
            websocket_write_buffer_size: 8 * 1024,
            portable_token_key: None,
        }
    }
}
