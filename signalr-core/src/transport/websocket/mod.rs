//! The WebSocket transport over a hyper upgrade: text frames for JSON, binary frames for
//! MessagePack, each message carrying whole records.
//!
//! The framing is our own (`frame`, sans-IO) rather than tungstenite's, for two measured
//! reasons: tungstenite zeroes its read buffer before every read (about 4,600 instructions per
//! echo, two reads per message) and keeps that buffer for the connection's whole life (4 KiB
//! of every idle connection's memory). Here a read lands in a buffer that belongs to the
//! thread; a connection holds received bytes of its own only while a frame is incomplete, and
//! an idle connection holds none.
//!
//! Both halves share the socket under one mutex, taken for the length of one poll: the
//! reader answers a Ping with a Pong through the writer's buffer. A client's Close ends the
//! stream; the connection's close sequence then answers it with the client's own code.

mod frame;

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) use self::frame::Violation;
use self::frame::{close_code, parse_close, parse_header, put_header, unmask, Header, OpCode};
use super::TransportSink;
use crate::options::HubOptions;
use crate::protocol::TransferFormat;

/// A write buffer larger than this is given back once it has been written, so that one burst
/// does not stay with the connection; the same for a receive buffer a large frame left behind.
/// A message is never handed over in an allocation larger than this or twice its own length:
/// values decoded from it may keep it (MessagePack arguments share their message), and a small
/// one must not pin a large receive buffer.
const KEEP_BUFFER: usize = 4 * 1024;

/// The most reserved ahead for a frame whose header has arrived: a header alone may declare up
/// to the message cap, and the rest of the room is made as its bytes arrive.
const RESERVE_AHEAD: usize = 64 * 1024;

/// Wraps an upgraded connection as a server-side WebSocket.
pub(crate) fn accept(upgraded: Upgraded, options: &HubOptions) -> (WsSink, WsStream) {
    // A single WebSocket message may hold several records, so it may exceed the per-record
    // limit; four times the limit (at least 64 KiB) bounds what one message can make us buffer.
    let max_message = options
        .max_receive_message_size
        .saturating_mul(4)
        .max(64 * 1024);
    split(
        TokioIo::new(upgraded),
        max_message,
        options.websocket_read_buffer_size,
        options.websocket_write_buffer_size,
    )
}

/// The two halves over any socket (tests and the fuzz target use in-memory ones).
pub(crate) fn split<S: Socket>(
    io: S,
    max_message: usize,
    read_chunk: usize,
    write_buffer: usize,
) -> (WsSink<S>, WsStream<S>) {
    let shared = Arc::new(Mutex::new(Shared {
        io,
        out: BytesMut::new(),
        out_peak: 0,
        pong: None,
        reader_flushing: false,
        writer_waiting: false,
        close: (close_code::NORMAL, ""),
        close_queued: false,
        closed: false,
    }));
    (
        WsSink {
            shared: shared.clone(),
            format: TransferFormat::Text,
            write_buffer,
        },
        WsStream {
            shared,
            reader: Reader {
                pending: BytesMut::new(),
                pending_advanced: false,
                fragments: None,
                max_message,
                read_chunk: read_chunk.max(frame::MAX_HEADER),
                done: false,
            },
        },
    )
}

/// What the transport runs over.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Socket for S {}

type DefaultSocket = TokioIo<Upgraded>;

/// The socket and what both halves write to it.
struct Shared<S> {
    io: S,
    /// Encoded frames not yet written, in order.
    out: BytesMut,
    /// The most `out` has held since it was last empty: written bytes are advanced past, so
    /// `out`'s own capacity does not tell how large its allocation is.
    out_peak: usize,
    /// The answer to the latest Ping, not yet in `out`. One at most, whatever the client
    /// sends (RFC 6455 §5.5.3 lets an endpoint answer only the most recent Ping): a client that
    /// floods Pings and never reads cannot grow the write buffer.
    pong: Option<Bytes>,
    /// The reader started writing `out` (for its Pong) and the socket did not take all of it:
    /// the reader's waker is registered, and its next poll goes on writing.
    reader_flushing: bool,
    /// The writer is waiting for the socket (to take more, or to flush). The reader then
    /// leaves its Pong to the writer: a write of its own would register the reader's waker in
    /// place of the writer's, and the writer would never wake.
    writer_waiting: bool,
    /// The code and reason of our Close frame: a violation found while reading sets them, and
    /// a client's Close is answered with its own code.
    close: (u16, &'static str),
    /// Our Close frame is in `out`: no Pong may follow it.
    close_queued: bool,
    /// Our Close frame is written (or the socket failed): nothing more goes out.
    closed: bool,
}

impl<S: Socket> Shared<S> {
    /// Writes `out` until the socket takes no more; `Ready(Ok)` once it is all written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.out.is_empty() {
                // The Pong goes in only once what was there is written, so `out` holds one
                // at most, however many Pings arrive while the socket is full.
                match self.pong.take() {
                    Some(pong) => self.queue_frame(OpCode::Pong, &[&pong]),
                    None => break,
                }
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => {
                    self.closed = true;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.out.advance(n),
                Poll::Ready(Err(e)) => {
                    self.closed = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.out_peak > KEEP_BUFFER {
            self.out = BytesMut::new();
        }
        self.out_peak = 0;
        Poll::Ready(Ok(()))
    }

    /// Appends one final frame whose payload is `parts`, one after the other.
    fn queue_frame(&mut self, opcode: OpCode, parts: &[&[u8]]) {
        put_header(
            &mut self.out,
            opcode,
            parts.iter().map(|part| part.len()).sum(),
        );
        for part in parts {
            self.out.extend_from_slice(part);
        }
        self.out_peak = self.out_peak.max(self.out.len());
    }

    /// Keeps the answer to a Ping (replacing one not yet written); the reader writes it at
    /// the end of its poll (`flush_from_reader`), or the writer with its next write.
    fn answer_ping(&mut self, payload: Bytes) {
        if !(self.closed || self.close_queued) {
            self.pong = Some(payload);
        }
    }

    /// The reader's part in writing: its Pong, and what it started writing, unless the
    /// writer is waiting on the socket (and will write them itself).
    fn flush_from_reader(&mut self, cx: &mut Context<'_>) {
        if !(self.pong.is_some() || self.reader_flushing) || self.writer_waiting || self.closed {
            return;
        }
        // With the reader's own waker: nobody else waits on the socket for writing now.
        self.reader_flushing = self.poll_write_out(cx).is_pending();
    }
}

fn lock<S>(shared: &Mutex<Shared<S>>) -> MutexGuard<'_, Shared<S>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// Where reads land when the connection has no incomplete frame: one buffer per thread,
    /// zeroed once, instead of one per connection, zeroed per read.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Received WebSocket messages, each as one chunk of bytes; control frames are answered here.
pub(crate) struct WsStream<S = DefaultSocket> {
    shared: Arc<Mutex<Shared<S>>>,
    reader: Reader,
}

/// The reading state, apart from the socket.
struct Reader {
    /// Received bytes not yet made into frames; empty and unallocated when caught up.
    pending: BytesMut,
    /// Frames were taken off the front of `pending` since it was last replaced, so its
    /// `capacity` counts only what is left of its buffer, not the whole of it.
    pending_advanced: bool,
    /// A fragmented message being put together: its opcode and payload so far.
    fragments: Option<(OpCode, BytesMut)>,
    max_message: usize,
    read_chunk: usize,
    /// The stream has ended (a Close, a violation, or the socket).
    done: bool,
}

enum Event {
    Message(Bytes),
    Closed,
}

impl Reader {
    /// The next message among the frames in `pending`, answering control frames on the way;
    /// `Ok(None)` when the frames there are incomplete.
    fn next_buffered<S: Socket>(
        &mut self,
        shared: &mut Shared<S>,
    ) -> Result<Option<Event>, Violation> {
        loop {
            let Some(header) = parse_header(&self.pending, self.max_message)? else {
                return Ok(None);
            };
            let frame_len = header.frame_len();
            if self.pending.len() < frame_len {
                self.pending
                    .reserve((frame_len - self.pending.len()).min(RESERVE_AHEAD));
                return Ok(None);
            }
            let mut payload = if frame_len < self.pending.len() {
                // More frames follow: this one is copied out rather than sharing the buffer
                // (a message kept by a method must not pin it; see KEEP_BUFFER).
                let payload = BytesMut::from(&self.pending[..frame_len]);
                self.pending.advance(frame_len);
                self.pending_advanced = true;
                payload
            } else if self.pending_advanced
                || self.pending.capacity() > KEEP_BUFFER.max(2 * frame_len)
            {
                // The last frame, in a buffer made for a larger one (or one whose size
                // `capacity` no longer tells, frames having been taken off its front): copied
                // out, so that the message does not keep that buffer alive.
                let payload = BytesMut::from(&self.pending[..]);
                self.pending = BytesMut::new();
                self.pending_advanced = false;
                payload
            } else {
                // The last frame: taken whole, and the connection holds nothing afterwards.
                std::mem::take(&mut self.pending)
            };
            payload.advance(header.header_len);
            unmask(&mut payload, header.mask);
            if let Some(event) = self.on_frame(header, payload, shared)? {
                return Ok(Some(event));
            }
        }
    }

    /// Frames read into the thread's buffer: complete ones are copied out (unmasked), and
    /// whatever is left after a message, or incomplete, is kept in `pending`.
    fn take_from_scratch<S: Socket>(
        &mut self,
        mut data: &[u8],
        shared: &mut Shared<S>,
    ) -> Result<Option<Event>, Violation> {
        loop {
            match parse_header(data, self.max_message)? {
                Some(header) if data.len() >= header.frame_len() => {
                    let mut payload = BytesMut::with_capacity(header.payload_len);
                    payload.extend_from_slice(&data[header.header_len..header.frame_len()]);
                    unmask(&mut payload, header.mask);
                    data = &data[header.frame_len()..];
                    if let Some(event) = self.on_frame(header, payload, shared)? {
                        self.pending.extend_from_slice(data);
                        return Ok(Some(event));
                    }
                }
                incomplete => {
                    if !data.is_empty() {
                        let frame_len = incomplete.map_or(frame::MAX_HEADER, |h| h.frame_len());
                        self.pending
                            .reserve(frame_len.min(RESERVE_AHEAD).max(data.len()));
                        self.pending.extend_from_slice(data);
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn on_frame<S: Socket>(
        &mut self,
        header: Header,
        payload: BytesMut,
        shared: &mut Shared<S>,
    ) -> Result<Option<Event>, Violation> {
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.fragments.is_some() {
                    return Err(Violation::protocol(
                        "a new message before the fragmented one ended",
                    ));
                }
                if header.fin {
                    return message(header.opcode, payload).map(Some);
                }
                self.fragments = Some((header.opcode, payload));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some((opcode, mut so_far)) = self.fragments.take() else {
                    return Err(Violation::protocol(
                        "a continuation frame outside a message",
                    ));
                };
                if so_far.len() + payload.len() > self.max_message {
                    return Err(Violation::too_big("message over the size limit"));
                }
                so_far.extend_from_slice(&payload);
                if header.fin {
                    return message(opcode, so_far).map(Some);
                }
                self.fragments = Some((opcode, so_far));
                Ok(None)
            }
            OpCode::Ping => {
                shared.answer_ping(payload.freeze());
                Ok(None)
            }
            OpCode::Pong => Ok(None),
            OpCode::Close => {
                if let Some(code) = parse_close(&payload)? {
                    shared.close = (code, "");
                }
                Ok(Some(Event::Closed))
            }
        }
    }
}

/// A whole message; a text one must be UTF-8 (RFC 6455 §8.1).
fn message(opcode: OpCode, payload: BytesMut) -> Result<Event, Violation> {
    if opcode == OpCode::Text && std::str::from_utf8(&payload).is_err() {
        return Err(Violation::invalid_data("invalid UTF-8 in a text message"));
    }
    Ok(Event::Message(payload.freeze()))
}

impl<S: Socket> WsStream<S> {
    /// Bytes of capacity the connection holds for received data (the fuzz target bounds it).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.reader.pending.capacity()
            + self
                .reader
                .fragments
                .as_ref()
                .map_or(0, |(_, so_far)| so_far.capacity())
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Event>>> {
        let mut shared = lock(&self.shared);
        let result = poll_frames(&mut self.reader, &mut shared, cx);
        shared.flush_from_reader(cx);
        result
    }
}

/// Reads frames until a message, the end of the stream, or a socket with nothing more.
fn poll_frames<S: Socket>(
    reader: &mut Reader,
    shared: &mut Shared<S>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<Event>>> {
    loop {
        if let Some(event) = reader.next_buffered(shared).map_err(violation)? {
            return Poll::Ready(Ok(Some(event)));
        }
        if reader.pending.is_empty() {
            let read_chunk = reader.read_chunk;
            let read = READ_SCRATCH.with_borrow_mut(|scratch| {
                if scratch.len() < read_chunk {
                    scratch.resize(read_chunk, 0);
                }
                let mut buf = ReadBuf::new(&mut scratch[..read_chunk]);
                match Pin::new(&mut shared.io).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(Ok(None)),
                    Poll::Ready(Ok(())) => Poll::Ready(
                        reader
                            .take_from_scratch(buf.filled(), shared)
                            .map(Some)
                            .map_err(violation),
                    ),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(None)) => return Poll::Ready(end_of_input(reader)),
                Poll::Ready(Ok(Some(Some(event)))) => return Poll::Ready(Ok(Some(event))),
                Poll::Ready(Ok(Some(None))) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        // An incomplete frame: the rest of it goes straight into `pending`, whose room
        // `next_buffered` reserved.
        if reader.pending.capacity() - reader.pending.len() < reader.read_chunk {
            reader.pending.reserve(reader.read_chunk);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut shared.io), cx, &mut reader.pending) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => return Poll::Ready(end_of_input(reader)),
            Poll::Ready(Ok(_)) => continue,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        }
    }
}

/// The client closed its side of the socket without a Close frame.
fn end_of_input(reader: &Reader) -> io::Result<Option<Event>> {
    let what = if reader.pending.is_empty() && reader.fragments.is_none() {
        "the client closed the socket without a Close frame"
    } else {
        "the client closed the socket in the middle of a frame"
    };
    Err(io::Error::new(io::ErrorKind::UnexpectedEof, what))
}

fn violation(violation: Violation) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, violation)
}

impl<S: Socket> Stream for WsStream<S> {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.reader.done {
            return Poll::Ready(None);
        }
        let event = std::task::ready!(this.poll_event(cx));
        Poll::Ready(match event {
            Ok(Some(Event::Message(message))) => Some(Ok(message)),
            Ok(Some(Event::Closed)) | Ok(None) => {
                this.reader.done = true;
                this.reader.pending = BytesMut::new();
                this.reader.pending_advanced = false;
                this.reader.fragments = None;
                None
            }
            Err(error) => {
                this.reader.done = true;
                if let Some(found) = error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<Violation>())
                {
                    lock(&this.shared).close = (found.close_code, found.reason());
                }
                this.reader.pending = BytesMut::new();
                this.reader.pending_advanced = false;
                this.reader.fragments = None;
                Some(Err(error))
            }
        })
    }
}

/// The sending half: one WebSocket message per record, typed by the protocol's format.
pub(crate) struct WsSink<S = DefaultSocket> {
    shared: Arc<Mutex<Shared<S>>>,
    format: TransferFormat,
    /// Bytes buffered before `feed` writes them without waiting for `flush`.
    write_buffer: usize,
}

impl<S: Socket> WsSink<S> {
    /// Writes everything buffered; the socket is flushed as well.
    async fn write_out(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut shared = lock(&self.shared);
            match shared.poll_write_out(cx) {
                Poll::Pending => {
                    shared.writer_waiting = true;
                    return Poll::Pending;
                }
                Poll::Ready(result) => {
                    shared.writer_waiting = false;
                    result?;
                }
            }
            let flushed = Pin::new(&mut shared.io).poll_flush(cx);
            // A socket that buffers (TLS) may wait here too, with the writer's waker.
            shared.writer_waiting = flushed.is_pending();
            flushed
        })
        .await
    }
}

impl<S: Socket> TransportSink for WsSink<S> {
    fn supports(&self, _format: TransferFormat) -> bool {
        true
    }

    fn set_transfer_format(&mut self, format: TransferFormat) {
        self.format = format;
    }

    async fn feed(&mut self, record: Bytes) -> io::Result<()> {
        // A text frame as it is: every text record is UTF-8 from where it was made (our JSON
        // encoder writes strings; records from a backplane are checked when they arrive,
        // `SerializedMessage::from_records`), so it is not checked again per client.
        let opcode = match self.format {
            TransferFormat::Binary => OpCode::Binary,
            TransferFormat::Text => OpCode::Text,
        };
        let buffered = {
            let mut shared = lock(&self.shared);
            if shared.closed {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            shared.queue_frame(opcode, &[&record]);
            shared.out.len()
        };
        if buffered >= self.write_buffer {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.write_out().await
    }

    async fn close(&mut self) {
        let code = {
            let mut shared = lock(&self.shared);
            if shared.closed {
                return;
            }
            let (code, reason) = shared.close;
            // Nothing of the reader's may follow our Close.
            shared.close_queued = true;
            shared.pong = None;
            shared.queue_frame(OpCode::Close, &[&code.to_be_bytes(), reason.as_bytes()]);
            code
        };
        let written = self.write_out().await;
        lock(&self.shared).closed = true;
        if written.is_ok() {
            let _ =
                std::future::poll_fn(|cx| Pin::new(&mut lock(&self.shared).io).poll_shutdown(cx))
                    .await;
        }
        tracing::trace!(code, "WebSocket closed");
    }
}

#[cfg(test)]
mod tests;
