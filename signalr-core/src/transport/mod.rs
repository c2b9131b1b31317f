//! Transports: how records get to and from a client. Each transport turns its socket or HTTP
//! requests into a stream of received chunks plus a [`TransportSink`]; the connection core does
//! the rest (handshake, limits, keep-alive, closing), once for all of them.

pub(crate) mod long_polling;
pub(crate) mod sse;
pub(crate) mod websocket;

use std::future::Future;
use std::io;

use bytes::Bytes;

use crate::protocol::TransferFormat;

/// The transports a hub can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Full-duplex WebSockets.
    WebSockets,
    /// Server-Sent Events for server-to-client, HTTP POST for client-to-server (text only).
    ServerSentEvents,
    /// Long polling: GET returns queued records, POST sends.
    LongPolling,
}

impl TransportKind {
    /// Every transport, in the order clients try them.
    pub const ALL: [TransportKind; 3] = [
        TransportKind::WebSockets,
        TransportKind::ServerSentEvents,
        TransportKind::LongPolling,
    ];

    /// The position in [`ALL`](Self::ALL), for tables indexed by transport.
    pub(crate) fn index(self) -> usize {
        match self {
            TransportKind::WebSockets => 0,
            TransportKind::ServerSentEvents => 1,
            TransportKind::LongPolling => 2,
        }
    }

    /// The name used in negotiate responses.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSockets => "WebSockets",
            TransportKind::ServerSentEvents => "ServerSentEvents",
            TransportKind::LongPolling => "LongPolling",
        }
    }

    /// The transfer formats the transport can carry, in negotiate order.
    pub fn transfer_formats(self) -> &'static [TransferFormat] {
        match self {
            TransportKind::ServerSentEvents => &[TransferFormat::Text],
            TransportKind::WebSockets | TransportKind::LongPolling => {
                &[TransferFormat::Text, TransferFormat::Binary]
            }
        }
    }
}

/// The sending half of a transport. Every record handed to it is complete; the sink must keep
/// record boundaries within its own units (never split a record across WebSocket messages,
/// SSE events or poll responses).
pub(crate) trait TransportSink: Send + 'static {
    /// Whether this transport can carry the format at all.
    fn supports(&self, format: TransferFormat) -> bool;
    /// Called once after the handshake, before the first hub record.
    fn set_transfer_format(&mut self, format: TransferFormat);
    /// Buffers one record.
    fn feed(&mut self, record: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Pushes buffered records to the client.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends the transport gracefully (for WebSockets: close frame 1000).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
    /// Completes when the client is known to have left without any write failing (an SSE
    /// response the client dropped); the connection then ends normally, as the reference ends
    /// it when the request is aborted. Transports that learn it from reading never complete.
    fn gone(&self) -> impl Future<Output = ()> + Send + 'static {
        std::future::pending()
    }
}
