//! Serving a hub on its own, without a web framework (the `server` feature, on by default).

mod body;
mod limits;
mod options;
mod rate;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

pub use body::{MinDataRateError, RequestBody};
pub use options::ServeOptions;
pub use rate::MinDataRate;

use crate::http::{json_error, text, BoxError, ResponseBody};
use crate::log_limit::{LogLimiter, REPEAT_INTERVAL};
use crate::{Hub, HubService, RemoteAddr};
use limits::{Admission, Socket, TrackedBody, Tracker};

/// How long the server waits after the shutdown signal (and the hub's shutdown) for HTTP
/// connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What HTTP/1 allows beyond the header limit for the request line (Kestrel's
/// `MaxRequestLineSize`).
const REQUEST_LINE: usize = 8 * 1024;

/// Serves `hub` at `path` (for example `"/hub"`) until Ctrl-C or SIGTERM, then shuts down
/// gracefully (see [`Hub::shutdown`]). HTTP/1.1 and HTTP/2, with the limits of
/// [`ServeOptions::default`]; needs the `server` feature.
pub async fn serve(listener: TcpListener, path: &str, hub: Hub) -> io::Result<()> {
    serve_with_shutdown(listener, path, hub, shutdown_signal()).await
}

/// Like [`serve`], but stops when `signal` completes.
pub async fn serve_with_shutdown(
    listener: TcpListener,
    path: &str,
    hub: Hub,
    signal: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_with(listener, path, hub, ServeOptions::default(), signal).await
}

/// Like [`serve_with_shutdown`], with the HTTP-level limits in `options`.
///
/// ```no_run
/// use std::time::Duration;
/// use signalr_core::{Hub, ServeOptions};
///
/// # async fn run() -> std::io::Result<()> {
/// let hub = Hub::builder().build();
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:5000").await?;
/// let options = ServeOptions::default()
///     .max_connections(20_000)
///     .keep_alive_timeout(Duration::from_secs(60));
/// signalr_core::serve_with(listener, "/hub", hub, options, signalr_core::shutdown_signal()).await
/// # }
/// ```
pub async fn serve_with(
    listener: TcpListener,
    path: &str,
    hub: Hub,
    options: ServeOptions,
    signal: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let mounted = Mounted {
        base: path.trim_end_matches('/').into(),
        hub: hub.service(),
    };
    run(listener, mounted, options, signal, hub.shutdown()).await
}

/// Serves any `tower::Service`, typically an axum `Router` with the hub nested in it
/// (`nest_service("/hub", hub.service())`), with the limits in `options`: the way to give an
/// application's own routes what [`serve_with`] gives a hub, which `axum::serve` does not
/// offer (no header or idle timeout, no connection cap). Every request carries a
/// [`RemoteAddr`] extension and a [`RequestBody`], already bounded by
/// [`ServeOptions::max_request_body_size`] and
/// [`ServeOptions::min_request_body_data_rate`]; HTTP/1.1 and HTTP/2, WebSocket upgrades
/// included.
///
/// Stops when `signal` completes, after letting connections finish for up to 5 s. Shut the
/// hub down in the signal, so that its clients get their Close message first:
///
/// ```no_run
/// use signalr_core::{Hub, ServeOptions};
///
/// # async fn run() -> std::io::Result<()> {
/// let hub = Hub::builder().build();
/// let app = axum::Router::new()
///     .route("/health", axum::routing::get(|| async { "ok" }))
///     .nest_service("/hub", hub.service());
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:5000").await?;
/// let signal = async move {
///     signalr_core::shutdown_signal().await;
///     hub.shutdown().await;
/// };
/// signalr_core::serve_service(listener, app, ServeOptions::default(), signal).await
/// # }
/// ```
pub async fn serve_service<S, B>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    signal: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    run(listener, service, options, signal, async {}).await
}

/// The accept loop of [`serve_with`] and [`serve_service`]; `stopping` runs once the signal
/// came and the listener is closed, before connections are asked to finish.
async fn run<S, B>(
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    signal: impl Future<Output = ()> + Send,
    stopping: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let builder = http_builder(&options);
    let admission = Admission::new(&options);
    let body_limit = options.max_request_body_size;
    let body_rate = options.min_request_body_data_rate;
    let header_limit = options.max_request_headers_total_size;
    let shutdown = CancellationToken::new();
    // Every connection task holds a sender; `recv` answers `None` once all of them ended.
    let (running, mut all_ended) = mpsc::channel::<()>(1);
    tokio::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Running out of file descriptors must not kill the server: back off.
                    static FAILED: LogLimiter = LogLimiter::new(REPEAT_INTERVAL);
                    if let Some(suppressed) = FAILED.allow() {
                        tracing::warn!(error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                static REFUSED: LogLimiter = LogLimiter::new(REPEAT_INTERVAL);
                if let Some(suppressed) = REFUSED.allow() {
                    tracing::warn!(%peer, suppressed, "connection refused (503): too many connections");
                }
                admission.refuse(stream, refusal);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tracker = Tracker::new(&options);
        let service = service.clone();
        let requests = tracker.clone();
        let handler = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let in_flight = requests.request_started(request.version());
            request.extensions_mut().insert(RemoteAddr(peer));
            let version = request.version();
            // hyper bounds what it buffers for a head only roughly (by its read buffer):
            // the exact limit is applied here, once the head is parsed.
            let refusal = if headers_size(&request) > header_limit {
                Some((
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "The request headers are too large.",
                ))
            } else if body_limit.is_some_and(|limit| declared_length(&request) > limit) {
                Some((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The request body is too large.",
                ))
            } else {
                None
            };
            let mut service = service.clone();
            let tracker = requests.clone();
            async move {
                let response = match refusal {
                    Some((status, message)) => {
                        refuse_request(version, status, message).map(Either::Right)
                    }
                    None => {
                        let limit = body_limit.unwrap_or(usize::MAX);
                        // HTTP/1 carries one request at a time, so a slow body counted on
                        // the connection while this request ran is this request's own. An
                        // HTTP/2 connection's requests run side by side: each gets a flag.
                        let http2 = version >= Version::HTTP_2;
                        // (None for a body that is already over: most GETs.)
                        let too_slow = (http2
                            && body_rate.is_some()
                            && !http_body::Body::is_end_stream(request.body()))
                        .then(|| Arc::new(AtomicBool::new(false)));
                        let slow_before = tracker.slow_bodies();
                        let request = request.map(|body| {
                            RequestBody::new(
                                body,
                                limit,
                                body_rate,
                                tracker.clone(),
                                too_slow.clone(),
                            )
                        });
                        std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                        let response = service.call(request).await?;
                        let was_too_slow = match &too_slow {
                            Some(flag) => flag.load(Ordering::Relaxed),
                            None => !http2 && tracker.slow_bodies() != slow_before,
                        };
                        if was_too_slow {
                            // Kestrel's answer, whatever the service made of the failed body.
                            refuse_request(
                                version,
                                StatusCode::REQUEST_TIMEOUT,
                                "The request body arrived too slowly.",
                            )
                            .map(Either::Right)
                        } else {
                            // HTTP/1 only: on HTTP/2 a 101 is no upgrade of the connection.
                            if response.status() == StatusCode::SWITCHING_PROTOCOLS
                                && version < Version::HTTP_2
                            {
                                tracker.upgraded();
                            }
                            response.map(Either::Left)
                        }
                    }
                };
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let io = TokioIo::new(Socket::new(
            stream,
            tracker.clone(),
            slot,
            options.min_response_data_rate,
        ));
        let connection = builder
            .serve_connection_with_upgrades(io, handler)
            .into_owned();
        let shutdown = shutdown.clone();
        let running = running.clone();
        tokio::spawn(async move {
            limits::drive(
                connection,
                |connection| connection.graceful_shutdown(),
                tracker,
                shutdown,
            )
            .await;
            drop(running);
        });
    }
    drop(listener);
    stopping.await;
    shutdown.cancel();
    drop(running);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, all_ended.recv()).await;
    Ok(())
}

/// A hub at its path; other paths get `404`.
#[derive(Clone)]
struct Mounted {
    base: Arc<str>,
    hub: HubService,
}

impl<B> Service<Request<B>> for Mounted
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let mounted = path == &*self.base
            || path
                .strip_prefix(&*self.base)
                .is_some_and(|rest| rest.starts_with('/'));
        match mounted {
            true => self.hub.call(request),
            false => Box::pin(std::future::ready(Ok(text(
                StatusCode::NOT_FOUND,
                "Not Found",
            )))),
        }
    }
}

/// hyper's server with the limits it enforces itself. Its own header timeout stays off: it
/// would also cut idle keep-alive connections, and it only starts once hyper-util has told
/// HTTP/1 from HTTP/2, which a client that sends nothing never lets it do; the connection
/// tracker covers both.
fn http_builder(options: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(options.max_request_headers_total_size + REQUEST_LINE);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.http2_max_concurrent_streams)
        .max_header_list_size(
            u32::try_from(options.max_request_headers_total_size).unwrap_or(u32::MAX),
        )
        .keep_alive_interval(options.http2_keep_alive_interval)
        .keep_alive_timeout(options.http2_keep_alive_timeout);
    builder
}

/// The body length a request declares (`Content-Length`); 0 when it declares none.
fn declared_length<B>(request: &Request<B>) -> usize {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(0, |length| usize::try_from(length).unwrap_or(usize::MAX))
}

/// The size of a request's headers as Kestrel counts it: each name and value, with the
/// `": "` and line end between them.
fn headers_size<B>(request: &Request<B>) -> usize {
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// A `413` or `431` with a JSON error, answered before the body is read; an HTTP/1
/// connection cannot carry another request after an unread body, and says so.
fn refuse_request(version: Version, status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut response = json_error(status, message);
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
