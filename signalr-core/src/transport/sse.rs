//! Server-Sent Events: one long response whose events carry the records; text only.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;

use super::TransportSink;
use crate::protocol::TransferFormat;

/// Writes each flushed batch of records as one SSE event (`data: ...\r\n\r\n`) into the response
/// body channel. A bounded channel: a client that reads slowly slows the writer down.
pub(crate) struct SseSink {
    body: mpsc::Sender<Bytes>,
    pending: BytesMut,
}

impl SseSink {
    pub(crate) fn new(body: mpsc::Sender<Bytes>) -> Self {
        SseSink {
            body,
            pending: BytesMut::new(),
        }
    }
}

/// Appends `payload` as SSE `data:` lines: split on `\n`, a trailing `\r` of each line dropped.
pub(crate) fn append_data_lines(payload: &[u8], event: &mut BytesMut) {
    for line in payload.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        event.put_slice(b"data: ");
        event.put_slice(line);
        event.put_slice(b"\r\n");
    }
}

impl TransportSink for SseSink {
    fn supports(&self, format: TransferFormat) -> bool {
        format == TransferFormat::Text
    }

    fn set_transfer_format(&mut self, _format: TransferFormat) {}

    async fn feed(&mut self, record: Bytes) -> io::Result<()> {
        // Records of one batch share an event; their concatenation is still whole records.
        self.pending.put_slice(&record);
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut event = BytesMut::with_capacity(self.pending.len() + 12);
        append_data_lines(&self.pending, &mut event);
        event.put_slice(b"\r\n");
        self.pending.clear();
        self.body
            .send(event.freeze())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "SSE response closed"))
    }

    fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        // hyper drops the response body when the client goes away.
        let body = self.body.clone();
        async move { body.closed().await }
    }

    async fn close(&mut self) {
        let _ = self.flush().await;
        // Dropping the sender ends the response body, which the client reads as the end.
        let (closed, _) = mpsc::channel(1);
        self.body = closed;
    }
}
