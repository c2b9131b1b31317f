//! The WebSocket transport over a hyper upgrade: text frames for JSON, binary frames for
//! MessagePack, each frame carrying one whole record.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, Stream, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::TransportSink;
use crate::options::HubOptions;
use crate::protocol::TransferFormat;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Wraps an upgraded connection as a server-side WebSocket, sized for many idle clients.
pub(crate) async fn accept(upgraded: Upgraded, options: &HubOptions) -> (WsSink, WsStream) {
    // A single WebSocket message may hold several records, so it may exceed the per-record
    // limit; four times the limit (at least 64 KiB) bounds what one message can make us buffer.
    let max_message = options
        .max_receive_message_size
        .saturating_mul(4)
        .max(64 * 1024);
    let config = WebSocketConfig::default()
        .read_buffer_size(options.websocket_read_buffer_size)
        .write_buffer_size(options.websocket_write_buffer_size)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (sink, stream) = socket.split();
    let close_code = Arc::new(AtomicU16::new(CloseCode::Normal.into()));
    (
        WsSink {
            inner: sink,
            format: TransferFormat::Text,
            close_code: close_code.clone(),
        },
        WsStream {
            inner: stream,
            close_code,
        },
    )
}

/// Received WebSocket data as a byte stream; control frames are handled by tungstenite.
pub(crate) struct WsStream {
    inner: SplitStream<Socket>,
    /// The close code the sink sends: a violation found while reading sets it.
    close_code: Arc<AtomicU16>,
}

/// Sorts a read error: a client that broke the WebSocket protocol gets `InvalidData` (and
/// the close code that names the violation); a failed socket is any other kind.
fn read_error(error: WsError, close_code: &AtomicU16) -> io::Error {
    let code = match &error {
        WsError::Utf8(_) => Some(CloseCode::Invalid),
        WsError::Capacity(_) => Some(CloseCode::Size),
        WsError::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    };
    match code {
        Some(code) => {
            close_code.store(code.into(), Ordering::Relaxed);
            io::Error::new(io::ErrorKind::InvalidData, error)
        }
        None => io::Error::other(error),
    }
}

impl Stream for WsStream {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            return match self.inner.poll_next_unpin(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => {
                    Poll::Ready(Some(Err(read_error(e, &self.close_code))))
                }
                Poll::Ready(Some(Ok(message))) => match message {
                    WsMessage::Text(text) => Poll::Ready(Some(Ok(Bytes::from(text)))),
                    WsMessage::Binary(data) => Poll::Ready(Some(Ok(data))),
                    WsMessage::Close(_) => Poll::Ready(None),
                    WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => continue,
                },
            };
        }
    }
}

/// The sending half: one WebSocket message per record, typed by the protocol's format.
pub(crate) struct WsSink {
    inner: SplitSink<Socket, WsMessage>,
    format: TransferFormat,
    close_code: Arc<AtomicU16>,
}

impl TransportSink for WsSink {
    fn supports(&self, _format: TransferFormat) -> bool {
        true
    }

    fn set_transfer_format(&mut self, format: TransferFormat) {
        self.format = format;
    }

    async fn feed(&mut self, record: Bytes) -> io::Result<()> {
        let message = match self.format {
            TransferFormat::Binary => WsMessage::Binary(record),
            // A text frame as it is: every text record is UTF-8 from where it was made (our
            // JSON encoder writes strings; records from a backplane are checked when they
            // arrive, `SerializedMessage::from_records`), so it is not checked again for each
            // client it is written to.
            TransferFormat::Text => {
                WsMessage::Frame(Frame::message(record, OpCode::Data(OpData::Text), true))
            }
        };
        self.inner.feed(message).await.map_err(io::Error::other)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await.map_err(io::Error::other)
    }

    async fn close(&mut self) {
        let code = CloseCode::from(self.close_code.load(Ordering::Relaxed));
        let reason = match code {
            CloseCode::Invalid => "Invalid UTF-8 in a text frame.",
            CloseCode::Size => "Message too big.",
            CloseCode::Protocol => "WebSocket protocol error.",
            _ => "",
        };
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = self.inner.send(WsMessage::Close(Some(frame))).await;
        let _ = self.inner.close().await;
    }
}
