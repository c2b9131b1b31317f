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
    /// The event being written: the `data:` lines of the records fed since the last flush,
    /// the last line still open. Handed on whole at the flush, so no buffer is kept between
    /// batches (one kept at the size of the largest batch would live as long as the
    /// connection), and the records are copied once.
    event: BytesMut,
}

impl SseSink {
    pub(crate) fn new(body: mpsc::Sender<Bytes>) -> Self {
        SseSink {
            body,
            event: BytesMut::new(),
        }
    }

    /// Ends the open `data:` line: a `\r` before its end is dropped, as SSE reads `\r\n`, `\r`
    /// and `\n` all as line ends. The last byte is the line's own: every line starts with
    /// `data: `, which does not end in `\r`.
    fn end_line(&mut self) {
        if self.event.last() == Some(&b'\r') {
            self.event.truncate(self.event.len() - 1);
        }
        self.event.put_slice(b"\r\n");
    }
}

/// What starts each line of an event.
const DATA: &[u8] = b"data: ";

impl TransportSink for SseSink {
    fn supports(&self, format: TransferFormat) -> bool {
        format == TransferFormat::Text
    }

    fn set_transfer_format(&mut self, _format: TransferFormat) {}

    async fn feed(&mut self, record: Bytes) -> io::Result<()> {
        // Records of one batch share an event; their concatenation is still whole records,
        // split into `data:` lines at each `\n` wherever it falls.
        if record.is_empty() {
            return Ok(());
        }
        if self.event.is_empty() {
            // Exactly the size of a one-line, one-record event: no spare capacity to carry.
            self.event.reserve(DATA.len() + record.len() + 4);
            self.event.put_slice(DATA);
        }
        let mut rest = &record[..];
        while let Some(at) = memchr::memchr(b'\n', rest) {
            self.event.put_slice(&rest[..at]);
            self.end_line();
            self.event.put_slice(DATA);
            rest = &rest[at + 1..];
        }
        self.event.put_slice(rest);
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.event.is_empty() {
            return Ok(());
        }
        self.end_line();
        self.event.put_slice(b"\r\n");
        let event = std::mem::take(&mut self.event).freeze();
        self.body
            .send(event)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The event for a batch, written the plain way: the records joined, split on `\n`, a
    /// trailing `\r` of each line dropped.
    fn expected_event(records: &[&[u8]]) -> Vec<u8> {
        let payload = records.concat();
        let mut event = Vec::new();
        for line in payload.split(|&b| b == b'\n') {
            event.extend_from_slice(b"data: ");
            event.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            event.extend_from_slice(b"\r\n");
        }
        event.extend_from_slice(b"\r\n");
        event
    }

    async fn event_for(records: &[&[u8]]) -> Option<Bytes> {
        let (body, mut events) = mpsc::channel(4);
        let mut sink = SseSink::new(body);
        for record in records {
            sink.feed(Bytes::copy_from_slice(record)).await.unwrap();
        }
        sink.flush().await.unwrap();
        assert_eq!(
            sink.event.capacity(),
            0,
            "the sink keeps nothing after a flush"
        );
        events.try_recv().ok()
    }

    /// A batch goes out as one event, and the sink keeps no buffer between batches.
    #[tokio::test]
    async fn a_batch_is_one_event_and_nothing_is_kept() {
        let one: &[&[u8]] = &[b"{\"type\":6}\x1e"];
        let event = event_for(one).await.unwrap();
        assert_eq!(event, &b"data: {\"type\":6}\x1e\r\n\r\n"[..]);
        let two: &[&[u8]] = &[b"{\"type\":6}\x1e", b"two\r\nlines\x1e"];
        let event = event_for(two).await.unwrap();
        assert_eq!(
            event,
            &b"data: {\"type\":6}\x1etwo\r\ndata: lines\x1e\r\n\r\n"[..]
        );
        assert!(event_for(&[]).await.is_none(), "nothing to flush, no event");
        assert!(
            event_for(&[b""]).await.is_none(),
            "an empty record is nothing"
        );
    }

    /// Line ends anywhere: inside a record, at its edges, a `\r` in one record and its `\n` in
    /// the next, empty lines, a lone `\r`.
    #[tokio::test]
    async fn every_split_gives_the_plain_event() {
        let text: &[u8] = b"a\r\n\nb\rc\r\r\nd\n\r\n\x1e";
        for first in 0..=text.len() {
            for second in first..=text.len() {
                let records = [&text[..first], &text[first..second], &text[second..]];
                let event = event_for(&records).await.unwrap();
                assert_eq!(
                    event,
                    expected_event(&records).as_slice(),
                    "split at {first} and {second}"
                );
            }
        }
    }
}
