//! The HTTP-level limits of the standalone server.

use std::time::Duration;

use super::MinDataRate;

/// HTTP-level limits of [`serve_with`](crate::serve_with): how long a client may take to
/// send a request head, how long an idle connection is kept, how many connections are open at
/// once, how large a request may be. [`serve`](crate::serve) and
/// [`serve_with_shutdown`](crate::serve_with_shutdown) use [`ServeOptions::default`].
///
/// The defaults follow Kestrel's (`KestrelServerLimits`, `Http2Limits`), except where noted:
///
/// | limit | default | past it | Kestrel |
/// |---|---|---|---|
/// | [request headers timeout](Self::request_headers_timeout) | 30 s | connection closed, no response | same value; see below for when it starts |
/// | [keep-alive timeout](Self::keep_alive_timeout) | 130 s | idle connection closed (HTTP/2: `GOAWAY`) | same |
/// | [concurrent connections](Self::max_connections) | 10,000 | `503` with a JSON error, then closed | unlimited, refused by closing |
/// | [connections per client address](Self::max_connections_per_ip) | unlimited | `503` with a JSON error, then closed | none |
/// | [request body data rate](Self::min_request_body_data_rate) | 240 bytes/s after a 5 s grace period | `408` with a JSON error, then closed (HTTP/2: `GOAWAY`; the other streams finish) | same value; on HTTP/2 the whole connection is aborted at once |
/// | [response data rate](Self::min_response_data_rate) | 240 bytes/s after a 5 s grace period: a write that waits on the client has its size / rate to finish | connection closed | same |
/// | [request body](Self::max_request_body_size) | 30,000,000 bytes (~28.6 MiB) | `413` with a JSON error; a long-polling or SSE POST that grows past it after part of it was delivered also ends its connection with an error | `413`; the connection reads on past the lost part |
/// | [request headers](Self::max_request_headers_total_size) | 32 KiB (HTTP/1: plus 8 KiB for the request line) | `431`, connection closed | same |
/// | [HTTP/2 streams per connection](Self::http2_max_concurrent_streams) | 100 | further streams refused (`REFUSED_STREAM`) | same |
/// | [HTTP/2 keep-alive ping](Self::http2_keep_alive_interval) | off; 20 s to answer when on | connection closed | same |
///
/// **The two timeouts** apply only while no request is in flight on the connection, so an
/// open WebSocket, a Server-Sent Events stream or a pending long poll is never cut; those
/// are bounded by the hub's own timers (client timeout, long poll wait). From the moment a
/// connection is accepted, its first request head must be complete within the request
/// headers timeout. After a response, the connection may stay idle for the keep-alive
/// timeout; on HTTP/1 the first byte of the next request then starts the request headers
/// timeout again. Kestrel gives a new connection the keep-alive timeout until its first byte
/// arrives; we give it the shorter headers timeout, because a connection that never speaks is
/// the cheapest way to hold a server's file descriptors.
///
/// **The connection cap** counts every open TCP connection, WebSockets included (Kestrel
/// counts upgraded connections separately, and without a limit by default): each one is a
/// file descriptor, and running out of those stops the whole server. 10,000 sits well under
/// a common limit of 20,000 open files per process; raise it together with `ulimit -n`. Past
/// the cap, a connection gets a short `HTTP/1.1 503` with `{"error":"..."}` and is closed
/// at once, without reading a request (Kestrel closes it without a word).
///
/// ```
/// use std::time::Duration;
/// use signalr_core::ServeOptions;
///
/// let options = ServeOptions::default()
///     .request_headers_timeout(Duration::from_secs(10))
///     .max_connections(50_000)
///     .max_connections_per_ip(200)
///     .max_request_body_size(1 << 20);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    pub(crate) request_headers_timeout: Option<Duration>,
    pub(crate) keep_alive_timeout: Option<Duration>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) max_request_body_size: Option<usize>,
    pub(crate) min_request_body_data_rate: Option<MinDataRate>,
    pub(crate) min_response_data_rate: Option<MinDataRate>,
    pub(crate) max_request_headers_total_size: usize,
    pub(crate) http2_max_concurrent_streams: u32,
    pub(crate) http2_keep_alive_interval: Option<Duration>,
    pub(crate) http2_keep_alive_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            request_headers_timeout: Some(Duration::from_secs(30)),
            // Kestrel's: a little more than the 2 minutes for which .NET's HttpClient keeps
            // an idle connection, so that the client, not the server, closes it.
            keep_alive_timeout: Some(Duration::from_secs(130)),
            max_connections: Some(10_000),
            max_connections_per_ip: None,
            // Kestrel's, after IIS's maxAllowedContentLength.
            max_request_body_size: Some(30_000_000),
            min_request_body_data_rate: Some(MinDataRate::kestrel_default()),
            min_response_data_rate: Some(MinDataRate::kestrel_default()),
            max_request_headers_total_size: 32 * 1024,
            http2_max_concurrent_streams: 100,
            http2_keep_alive_interval: None,
            http2_keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

/// Panics on a zero duration: "no time at all" is never meant; `None` turns a timer off.
fn positive(name: &str, duration: Option<Duration>) -> Option<Duration> {
    assert!(
        duration != Some(Duration::ZERO),
        "{name} must be positive (None turns it off)"
    );
    duration
}

/// Panics on zero: a limit of nothing would refuse everything.
fn at_least_one(name: &str, limit: Option<usize>) -> Option<usize> {
    assert!(
        limit != Some(0),
        "{name} must be at least 1 (None lifts it)"
    );
    limit
}

impl ServeOptions {
    /// How long a client may take to send a request head: from accept to the end of the
    /// first request's head, and on HTTP/1 from the first byte of each later request to the
    /// end of its head. Past it the connection is closed without a response, as hyper and
    /// Kestrel do. Default 30 s; `None` turns it off (not advised facing the internet).
    pub fn request_headers_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.request_headers_timeout = positive("request_headers_timeout", timeout.into());
        self
    }

    /// How long a connection with no request in flight is kept after its last response.
    /// HTTP/1 connections are then closed; HTTP/2 ones get a `GOAWAY` first. Upgraded
    /// connections (WebSockets) and requests still being answered (long polls, Server-Sent
    /// Events) never count as idle. Default 130 s; `None` keeps idle connections open.
    pub fn keep_alive_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.keep_alive_timeout = positive("keep_alive_timeout", timeout.into());
        self
    }

    /// The most TCP connections open at once, WebSockets included. Past it a new
    /// connection gets `503` with a JSON error and is closed. Default 10,000; `None` lifts
    /// the cap. Keep it under the process's open-file limit (`ulimit -n`), leaving room for
    /// everything else the application opens.
    pub fn max_connections(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.max_connections = at_least_one("max_connections", limit.into());
        self
    }

    /// The most connections open at once from one client IP address (IPv4-mapped IPv6
    /// addresses count as their IPv4 address). Past it: `503` as for
    /// [`max_connections`](Self::max_connections). Default unlimited: behind a proxy or a
    /// carrier NAT many clients share one address, so set it only when peers are the
    /// clients themselves.
    pub fn max_connections_per_ip(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.max_connections_per_ip = at_least_one("max_connections_per_ip", limit.into());
        self
    }

    /// The largest request body, in bytes: a long-polling or Server-Sent Events POST, or a
    /// negotiate (whose body is never read). A declared `Content-Length` past it gets `413`
    /// with a JSON error before anything is read; a chunked body that grows past it gets the
    /// same once it does, and if part of it already reached its hub connection, that
    /// connection ends with an error (ASP.NET Core reads on past the lost part).
    /// WebSocket messages are bounded by the hub's message limits instead. Default
    /// 30,000,000 bytes; `None` lifts it.
    pub fn max_request_body_size(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.max_request_body_size = at_least_one("max_request_body_size", limit.into());
        self
    }

    /// How slowly a client may send a request body: past the grace period, the bytes
    /// received so far must average at least the rate, counting only the time the body was
    /// being waited for. Past it the body ends with a
    /// [`MinDataRateError`](crate::MinDataRateError); if that happens while the service is
    /// still answering, the client gets `408` with a JSON error instead of the service's
    /// answer, and the connection is closed. Without it, a client that trickles a body holds
    /// its connection, and its place under [`max_connections`](Self::max_connections), for
    /// as long as it likes. Default 240 bytes/s after 5 s, Kestrel's
    /// `MinRequestBodyDataRate`; `None` turns it off. On HTTP/2 the slow request gets the
    /// `408` and the connection a `GOAWAY`, since otherwise a client could trickle one
    /// stream after another: its other requests finish as usual (they may be other users'
    /// behind a proxy; Kestrel aborts them all), new ones need a new connection. An HTTP/2
    /// connection's streams share one flow-control window (1 MiB, as is each stream's), so
    /// a body can also stall while the service leaves about that much of another body of
    /// the same connection unread; that counts against the client too.
    pub fn min_request_body_data_rate(mut self, rate: impl Into<Option<MinDataRate>>) -> Self {
        self.min_request_body_data_rate = rate.into();
        self
    }

    /// How slowly a client may read a response: a write that has to wait for the client to
    /// make room must finish within its size divided by the rate (at least the grace
    /// period), plus what the client takes meanwhile earns. Past it the connection is
    /// closed. Without it, a
    /// client that stops reading holds its connection, and the kernel memory of what is
    /// queued for it, for as long as it likes. WebSockets are exempt once upgraded: the
    /// hub's send timeout bounds their writes (Kestrel exempts them too). Default 240
    /// bytes/s after 5 s, Kestrel's `MinResponseDataRate`: generous (a 1 MB write may take
    /// over an hour), so that a slow but honest reader is never cut; raise the rate to
    /// free stalled connections sooner. `None` turns it off.
    pub fn min_response_data_rate(mut self, rate: impl Into<Option<MinDataRate>>) -> Self {
        self.min_response_data_rate = rate.into();
        self
    }

    /// The largest request head, in bytes: the header block of an HTTP/2 request, or the
    /// headers of an HTTP/1 request, which may use 8 KiB more for its request line. Past it:
    /// `431 Request Header Fields Too Large`. Default 32 KiB; at least 1 KiB.
    pub fn max_request_headers_total_size(mut self, limit: usize) -> Self {
        assert!(
            limit >= 1024,
            "max_request_headers_total_size must be at least 1 KiB"
        );
        self.max_request_headers_total_size = limit;
        self
    }

    /// The most concurrent streams (requests) a client may open on one HTTP/2 connection;
    /// more are refused with `REFUSED_STREAM`. Default 100; at least 1.
    pub fn http2_max_concurrent_streams(mut self, limit: u32) -> Self {
        assert!(
            limit >= 1,
            "http2_max_concurrent_streams must be at least 1"
        );
        self.http2_max_concurrent_streams = limit;
        self
    }

    /// How often an HTTP/2 connection is pinged to find dead peers (the
    /// [timeout](Self::http2_keep_alive_timeout) to answer starts with each ping). Default
    /// off, as in Kestrel: the hub's own keep-alive and client timeout find dead clients.
    pub fn http2_keep_alive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.http2_keep_alive_interval = positive("http2_keep_alive_interval", interval.into());
        self
    }

    /// How long an HTTP/2 peer has to answer a keep-alive ping before the connection is
    /// closed; only with an [interval](Self::http2_keep_alive_interval). Default 20 s.
    pub fn http2_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.http2_keep_alive_timeout =
            positive("http2_keep_alive_timeout", Some(timeout)).unwrap_or(timeout);
        self
    }
}
