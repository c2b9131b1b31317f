//! How [`ServeOptions`] are enforced on each TCP connection: admission (the connection caps),
//! the idle and header timers, and what counts as a request in flight.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{MinDataRate, ServeOptions};

use super::rate::RateClock;
use crate::connection::Timer;
use crate::http::{BoxError, ResponseBody};

/// Refusals being written at once; past it a refused connection is closed without a word, so
/// that a flood cannot turn refusals into a second way of holding descriptors.
const REFUSALS_AT_ONCE: usize = 256;

/// How long a refusal waits for the client to take its answer before closing.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Request bytes a refusal reads (and drops) while it lingers, so that the close does not
/// turn into a reset that could destroy the answer before the client read it.
const REFUSAL_DRAIN: usize = 16 * 1024;

/// How long an idle HTTP/2 connection has, after its `GOAWAY`, to close by itself.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Decides which accepted connections are served, under the connection caps.
pub(super) struct Admission {
    total: Option<Arc<Semaphore>>,
    per_ip_limit: Option<usize>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    refusals: Arc<Semaphore>,
}

/// Why a connection was refused; the text is the JSON error the client gets.
#[derive(Clone, Copy)]
pub(super) enum Refusal {
    Total,
    PerIp,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Total => "The server has too many connections; try again later.",
            Refusal::PerIp => "Too many connections from this address; try again later.",
        }
    }
}

/// The place a served connection takes under the caps, given back when its socket closes
/// (it lives in the socket, so an upgraded WebSocket keeps holding it).
pub(super) struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    _per_ip: Option<IpSlot>,
}

struct IpSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
                // Many addresses at once (a spread-out flood) must not leave a large table.
                crate::shrink::shrink_if_sparse(&mut counts);
            }
        }
    }
}

impl Admission {
    pub(super) fn new(options: &ServeOptions) -> Self {
        Admission {
            total: options.max_connections.map(|n| Arc::new(Semaphore::new(n))),
            per_ip_limit: options.max_connections_per_ip,
            per_ip: Arc::default(),
            refusals: Arc::new(Semaphore::new(REFUSALS_AT_ONCE)),
        }
    }

    pub(super) fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let permit = match &self.total {
            Some(total) => Some(
                total
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Refusal::Total)?,
            ),
            None => None,
        };
        let per_ip = match self.per_ip_limit {
            Some(limit) => {
                let ip = ip.to_canonical();
                let mut counts = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
                let count = counts.entry(ip).or_insert(0);
                if *count >= limit {
                    return Err(Refusal::PerIp);
                }
                *count += 1;
                Some(IpSlot {
                    counts: self.per_ip.clone(),
                    ip,
                })
            }
            None => None,
        };
        Ok(Slot {
            _permit: permit,
            _per_ip: per_ip,
        })
    }

    /// Answers a refused connection with a `503` and closes it, in the background; past
    /// [`REFUSALS_AT_ONCE`] it is closed at once.
    pub(super) fn refuse(&self, stream: TcpStream, refusal: Refusal) {
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_LINGER, write_refusal(stream, refusal)).await;
            drop(permit);
        });
    }
}

/// The whole refusal: it is written before any request is read (so a client that never
/// sends one still learns why), then the request, if any, is read and dropped until the
/// client closes.
async fn write_refusal(mut stream: TcpStream, refusal: Refusal) -> io::Result<()> {
    let body = serde_json::json!({ "error": refusal.message() }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    let mut drained = 0;
    let mut buf = [0; 1024];
    while drained < REFUSAL_DRAIN {
        match stream.read(&mut buf).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// What the timers of one connection know: requests in flight, and when it is due to close.
pub(super) struct Tracker {
    state: Mutex<TrackerState>,
    /// Wakes the connection's driver when its deadline moved.
    changed: Notify,
    /// Idle between HTTP/1 requests: the next byte read starts the headers timeout.
    awaiting_bytes: AtomicBool,
    /// A request was answered `101`: the socket now carries a WebSocket, whose writes the
    /// hub times itself (its send timeout), so the minimum response rate no longer applies.
    upgraded: AtomicBool,
    /// Request bodies that ended for being too slow.
    slow_bodies: AtomicUsize,
    headers_timeout: Option<Duration>,
    keep_alive_timeout: Option<Duration>,
}

struct TrackerState {
    in_flight: usize,
    http2: bool,
    /// When the connection closes unless a request arrives; `None` while requests are in
    /// flight or when the relevant timer is off.
    deadline: Option<Instant>,
}

impl Tracker {
    /// A tracker for a connection accepted now: its first request head is due within the
    /// headers timeout.
    pub(super) fn new(options: &ServeOptions) -> Arc<Self> {
        let headers_timeout = options.request_headers_timeout;
        Arc::new(Tracker {
            state: Mutex::new(TrackerState {
                in_flight: 0,
                http2: false,
                deadline: headers_timeout.map(|t| Instant::now() + t),
            }),
            changed: Notify::new(),
            awaiting_bytes: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            slow_bodies: AtomicUsize::new(0),
            headers_timeout,
            keep_alive_timeout: options.keep_alive_timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request head arrived: no timer runs until every request in flight is answered.
    pub(super) fn request_started(self: &Arc<Self>, version: http::Version) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.deadline = None;
        state.http2 |= version == http::Version::HTTP_2;
        self.awaiting_bytes.store(false, Ordering::Relaxed);
        InFlight {
            tracker: self.clone(),
        }
    }

    /// The first byte of a request after an idle spell: its head is now due within the
    /// headers timeout (Kestrel's rule), instead of the keep-alive timeout.
    fn first_byte(&self) {
        if !self.awaiting_bytes.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut state = self.lock();
        if state.in_flight == 0 {
            state.deadline = self.headers_timeout.map(|t| Instant::now() + t);
            drop(state);
            self.changed.notify_one();
        }
    }

    /// The connection was upgraded (a `101` went out).
    pub(super) fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }

    /// A request body of this connection ended for being too slow. On HTTP/1 the `408`
    /// closes the connection; on HTTP/2 the driver sends `GOAWAY`, or a client could open
    /// one trickling stream after another and hold the connection for ever (also when the
    /// body turned slow after its response went out, with no `408`).
    pub(super) fn body_too_slow(&self) {
        self.slow_bodies.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub(super) fn slow_bodies(&self) -> usize {
        self.slow_bodies.load(Ordering::Relaxed)
    }

    fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }

    /// Whether the connection is idle past its deadline.
    fn expired(&self, now: Instant) -> bool {
        let state = self.lock();
        state.in_flight == 0 && state.deadline.is_some_and(|d| d <= now)
    }

    fn is_http2(&self) -> bool {
        self.lock().http2
    }
}

/// One request in flight, from its head until its response body is done (or dropped): a
/// long poll, a Server-Sent Events stream, or any other request. (A WebSocket needs no
/// such care: once the `101` is written hyper hands the socket to the hub and the HTTP
/// connection, with its timers, ends.)
pub(super) struct InFlight {
    tracker: Arc<Tracker>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let tracker = &self.tracker;
        let mut state = tracker.lock();
        state.in_flight -= 1;
        if state.in_flight == 0 {
            state.deadline = tracker.keep_alive_timeout.map(|t| Instant::now() + t);
            // HTTP/2 reads frames (pings, settings) that start no request: only streams count.
            tracker.awaiting_bytes.store(
                !state.http2 && tracker.headers_timeout.is_some(),
                Ordering::Relaxed,
            );
            drop(state);
            tracker.changed.notify_one();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's [`InFlight`] until it is done or dropped:
    /// the service's own body (not boxed a second time), or an answer `serve` gives in its
    /// place.
    pub(super) struct TrackedBody<B> {
        #[pin]
        pub(super) body: http_body_util::Either<B, ResponseBody>,
        pub(super) _in_flight: InFlight,
    }
}

impl<B> http_body::Body for TrackedBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A served TCP connection: it holds the connection's [`Slot`] until the socket closes,
/// tells the [`Tracker`] when a request starts arriving, and fails a write that waits on a
/// client reading slower than the minimum response data rate.
pub(super) struct Socket {
    stream: TcpStream,
    tracker: Arc<Tracker>,
    /// Times writes the kernel cannot take at once; `None` when the rate is off or the
    /// connection was upgraded.
    write_clock: Option<RateClock>,
    _slot: Slot,
}

impl Socket {
    pub(super) fn new(
        stream: TcpStream,
        tracker: Arc<Tracker>,
        slot: Slot,
        min_response_rate: Option<MinDataRate>,
    ) -> Self {
        Socket {
            stream,
            tracker,
            write_clock: min_response_rate.map(RateClock::new),
            _slot: slot,
        }
    }

    /// Judges a write of `offered` bytes by how it went: one the kernel takes whole means
    /// the client keeps up, and the count starts again; one that must wait runs the clock,
    /// and fails once the client is too slow. As in Kestrel, the write that first has to
    /// wait earns `offered / rate` to finish (at least the grace period): the kernel takes
    /// back room only in large steps, so a client reading slowly but steadily may show no
    /// progress for many seconds. Partial writes after that add what they moved.
    fn judge_write(
        &mut self,
        offered: usize,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let Some(clock) = &mut self.write_clock else {
            return poll;
        };
        match poll {
            Poll::Ready(Ok(_)) if offered == 0 => {}
            Poll::Ready(Ok(written)) if written >= offered => clock.restart(),
            Poll::Ready(Ok(written)) if clock.has_waited() => clock.moved(written),
            Poll::Ready(Ok(_)) => {}
            Poll::Pending if self.tracker.upgraded.load(Ordering::Relaxed) => {
                self.write_clock = None;
            }
            Poll::Pending => {
                if !clock.has_waited() {
                    clock.credit(offered);
                }
                if clock.poll_waiting(cx).is_ready() {
                    tracing::debug!("closing an HTTP connection whose client reads slower than the minimum response data rate");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read the response slower than the minimum data rate",
                    )));
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        poll
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before && this.tracker.awaiting_bytes.load(Ordering::Relaxed) {
            this.tracker.first_byte();
        }
        poll
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.judge_write(buf.len(), cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        let offered = bufs.iter().map(|buf| buf.len()).sum();
        this.judge_write(offered, cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Runs one HTTP connection to its end: closes it when it sits idle past its deadline,
/// and asks it to finish gracefully (`graceful`) when the server shuts down.
///
/// The connection is woken several times per request; the other things the driver waits on
/// (the shutdown, a moved deadline, the idle timer) are polled only after one of them woke
/// it. Polling them at every wake cost more instructions than everything else the driver
/// does for a long-polling echo.
pub(super) async fn drive<C, E>(
    connection: C,
    graceful: impl Fn(Pin<&mut C>),
    tracker: Arc<Tracker>,
    shutdown: CancellationToken,
) where
    C: Future<Output = Result<(), E>>,
    E: Display,
{
    let tracker = &*tracker;
    let mut connection = std::pin::pin!(connection);
    let mut shutting_down = std::pin::pin!(shutdown.cancelled());
    let mut changed = std::pin::pin!(tracker.changed.notified());
    // Lazy: a keep-alive deadline pushed back by each request does not reset it; when it fires
    // early, `expired` says so and it is armed again.
    let mut idle = Timer::new();
    let mut draining = false;
    // Set once an idle HTTP/2 connection got its GOAWAY: then it is closed even with streams.
    let mut hard_stop: Option<Instant> = None;
    let side = Arc::new(SideWake::default());
    let side_waker = std::task::Waker::from(side.clone());
    std::future::poll_fn(|cx| loop {
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            return Poll::Ready(());
        }
        // Registered before the flag is read, so that a wake in between is not lost.
        side.task.register(cx.waker());
        if !side.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut side_cx = Context::from_waker(&side_waker);
        if !draining && shutting_down.as_mut().poll(&mut side_cx).is_ready() {
            draining = true;
            graceful(connection.as_mut());
            // The connection must be polled to act on it; the rest is polled again after.
            side.woken.store(true, Ordering::Relaxed);
            continue;
        }
        while changed.as_mut().poll(&mut side_cx).is_ready() {
            changed.set(tracker.changed.notified());
        }
        if !draining && tracker.slow_bodies() > 0 && tracker.is_http2() {
            // No hard stop: the other streams may be other users' behind a proxy, and each
            // ends by itself (a slow body by this rate, a long poll by its timeout).
            tracing::debug!("sending GOAWAY to an HTTP/2 connection that sent a body too slowly");
            draining = true;
            graceful(connection.as_mut());
            side.woken.store(true, Ordering::Relaxed);
            continue;
        }
        let deadline = hard_stop.or_else(|| tracker.deadline());
        if !idle.arm(deadline.map(Instant::into_std)) || idle.poll_fired(&mut side_cx).is_pending()
        {
            return Poll::Pending;
        }
        if hard_stop.is_some() {
            return Poll::Ready(());
        }
        if tracker.expired(Instant::now()) {
            if !tracker.is_http2() {
                // No request in flight: dropping the connection closes the socket.
                tracing::debug!("closing an HTTP connection idle past its timeout");
                return Poll::Ready(());
            }
            tracing::debug!("sending GOAWAY to an idle HTTP/2 connection");
            draining = true;
            graceful(connection.as_mut());
            hard_stop = Some(Instant::now() + GOAWAY_GRACE);
        }
        // Fired early (the deadline moved), or the GOAWAY went out: armed again next pass.
        side.woken.store(true, Ordering::Relaxed);
    })
    .await
}

/// The waker [`drive`] gives the futures it waits on beside the connection: it notes that
/// one of them is ready to be polled, then wakes the driver's task.
struct SideWake {
    woken: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl Default for SideWake {
    fn default() -> Self {
        SideWake {
            // The first pass polls everything, so that each registers its waker.
            woken: AtomicBool::new(true),
            task: futures_util::task::AtomicWaker::new(),
        }
    }
}

impl std::task::Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}
