//! Raw connections (`MapConnectionHandler` in ASP.NET Core): negotiate and the three transports,
//! with no handshake and no hub protocol. The application reads and writes bytes.
//!
//! ```no_run
//! use signalr_core::ConnectionHandler;
//!
//! # async fn run() -> std::io::Result<()> {
//! // Echo: whatever a client sends comes back, text as text.
//! let echo = ConnectionHandler::new(|mut connection| async move {
//!     while let Some(data) = connection.recv().await {
//!         if connection.send(data).await.is_err() {
//!             break;
//!         }
//!     }
//! });
//! let app: axum::Router = axum::Router::new().nest_service("/echo", echo.service());
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connection::ConnectionParams;
use crate::error::{Error, Kind};
use crate::hub::{Hub, HubBuilder};
use crate::protocol::TransferFormat;
use crate::request::HttpRequest;
use crate::transport::{TransportKind, TransportSink};
use crate::{BoxFuture, HubService};

/// What the HTTP layer hands a raw connection handler.
pub(crate) type RawHandler = Arc<dyn Fn(RawConnection) -> BoxFuture<'static, ()> + Send + Sync>;

/// Writes the application may queue before `send` waits.
const QUEUED_WRITES: usize = 64;

/// A raw connection endpoint: every connection runs the handler once; the connection ends when
/// the handler returns (or the client leaves, which ends [`RawConnection::recv`]).
#[derive(Clone)]
pub struct ConnectionHandler {
    hub: Hub,
}

impl ConnectionHandler {
    /// An endpoint with the default options (every transport).
    pub fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(RawConnection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::with_options(Hub::builder(), handler)
    }

    /// An endpoint whose transports, timeouts, CORS and authentication come from `builder`
    /// (its methods, hooks and protocols are not used: raw connections have none).
    pub fn with_options<F, Fut>(builder: HubBuilder, handler: F) -> Self
    where
        F: Fn(RawConnection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: RawHandler = Arc::new(move |connection| Box::pin(handler(connection)));
        ConnectionHandler {
            hub: builder.raw_handler(handler).build(),
        }
    }

    /// The endpoint as a `tower::Service`, to mount like a hub's.
    pub fn service(&self) -> HubService {
        self.hub.service()
    }
}

enum Outgoing {
    Data(Bytes),
    Format(TransferFormat),
}

/// One raw connection: the bytes a client sends, in the chunks they arrived in (a WebSocket
/// message, a POST body), and a way to send it bytes.
pub struct RawConnection {
    id: Arc<str>,
    transport: TransportKind,
    request: Option<Arc<HttpRequest>>,
    inbound: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync>>,
    sender: RawSender,
}

/// The sending half of a [`RawConnection`], usable from other tasks.
#[derive(Clone)]
pub struct RawSender {
    outgoing: mpsc::Sender<Outgoing>,
    closed: CancellationToken,
    send_timeout: Duration,
}

impl RawConnection {
    /// The connection id.
    pub fn connection_id(&self) -> &str {
        &self.id
    }

    /// The transport the client uses.
    pub fn transport(&self) -> TransportKind {
        self.transport
    }

    /// The HTTP request the connection was made with.
    pub fn http_request(&self) -> Option<&HttpRequest> {
        self.request.as_deref()
    }

    /// The next bytes from the client; `None` once it left or the connection closed.
    pub async fn recv(&mut self) -> Option<Bytes> {
        tokio::select! {
            _ = self.sender.closed.cancelled() => None,
            next = self.inbound.next() => match next {
                Some(Ok(data)) => Some(data),
                Some(Err(_)) | None => None,
            },
        }
    }

    /// Sends bytes to the client (a WebSocket message, an SSE event, part of a poll).
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        self.sender.send(data).await
    }

    /// Text (the default, as in the reference) or binary WebSocket messages from now on. Text
    /// must be UTF-8; Server-Sent Events carry text only.
    pub fn set_transfer_format(&self, format: TransferFormat) {
        let _ = self.sender.outgoing.try_send(Outgoing::Format(format));
    }

    /// A handle to send from other tasks.
    pub fn sender(&self) -> RawSender {
        self.sender.clone()
    }

    /// Ends the connection once what was sent is written.
    pub fn close(&self) {
        self.sender.close();
    }
}

impl RawSender {
    /// See [`RawConnection::send`]. Waits up to the send timeout for room; a client that
    /// does not read that long is disconnected.
    pub async fn send(&self, data: impl Into<Bytes>) -> Result<(), Error> {
        if self.closed.is_cancelled() {
            return Err(Error::new(Kind::Closed));
        }
        match self
            .outgoing
            .send_timeout(Outgoing::Data(data.into()), self.send_timeout)
            .await
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Error::new(Kind::Closed)),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.closed.cancel();
                Err(Error::with(Kind::Timeout, "send timed out"))
            }
        }
    }

    /// Ends the connection once what was sent is written.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

/// Runs one raw connection: the handler on this task, the writes on another.
pub(crate) async fn run<I, S>(
    handler: RawHandler,
    params: ConnectionParams,
    send_timeout: Duration,
    inbound: I,
    mut sink: S,
) where
    I: Stream<Item = io::Result<Bytes>> + Send + Sync + 'static,
    S: TransportSink,
{
    let (outgoing, mut queued) = mpsc::channel(QUEUED_WRITES);
    let closed = CancellationToken::new();
    sink.set_transfer_format(TransferFormat::Text);
    let writer_closed = closed.clone();
    let writer = tokio::spawn(async move {
        let gone = sink.gone();
        tokio::pin!(gone);
        let mut format = TransferFormat::Text;
        loop {
            let next = tokio::select! {
                biased;
                next = queued.recv() => next,
                _ = &mut gone => break,
                _ = writer_closed.cancelled() => {
                    // Drain what was sent before the close, then end.
                    queued.close();
                    queued.recv().await
                }
            };
            let written = match next {
                None => break,
                Some(Outgoing::Format(next)) => {
                    format = next;
                    sink.set_transfer_format(format);
                    continue;
                }
                // The sinks write text as they are given it: the application's text is
                // checked here, and a send that is not UTF-8 ends the connection.
                Some(Outgoing::Data(data))
                    if format == TransferFormat::Text && std::str::from_utf8(&data).is_err() =>
                {
                    break;
                }
                Some(Outgoing::Data(data)) => {
                    let write = async {
                        sink.feed(data).await?;
                        sink.flush().await
                    };
                    tokio::time::timeout(send_timeout, write).await
                }
            };
            if !matches!(written, Ok(Ok(()))) {
                break;
            }
        }
        writer_closed.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), sink.close()).await;
    });
    let connection = RawConnection {
        id: params.connection_id,
        transport: params.transport,
        request: params.request,
        inbound: Box::pin(inbound),
        sender: RawSender {
            outgoing,
            closed: closed.clone(),
            send_timeout,
        },
    };
    handler(connection).await;
    closed.cancel();
    let _ = writer.await;
}
