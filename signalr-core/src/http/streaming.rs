//! The HTTP transports: Server-Sent Events and long polling for server-to-client, POST for
//! client-to-server, DELETE to end a long-polling connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::connections::{BindRefusal, Binding, HttpConnection};
use super::{body, json_error, text, BoxError, ResponseBody};
use crate::auth::Identity;
use crate::connection::ConnectionParams;
use crate::hub::HubShared;
use crate::observe;
use crate::request::HttpRequest;
use crate::transport::long_polling::{LongPollSink, PollOutcome, PollQueue};
use crate::transport::sse::SseSink;
use crate::transport::{TransportKind, TransportSink};

/// SSE events waiting for the client to read them.
const SSE_EVENTS_BUFFERED: usize = 16;

fn unknown_connection() -> Response<ResponseBody> {
    text(StatusCode::NOT_FOUND, "No Connection with that ID")
}

fn refusal(refusal: BindRefusal) -> Response<ResponseBody> {
    match refusal {
        BindRefusal::InUse => text(StatusCode::CONFLICT, "Connection is already in use."),
        BindRefusal::OtherTransport => text(
            StatusCode::BAD_REQUEST,
            "Cannot change transports mid-connection",
        ),
        BindRefusal::Gone => unknown_connection(),
    }
}

/// The received chunks of a connection as the stream the connection core reads; it ends
/// with an error if a POST broke off partway.
struct InboundStream {
    chunks: mpsc::Receiver<Bytes>,
    connection: Arc<HttpConnection>,
}

impl futures_util::Stream for InboundStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.chunks.poll_recv(cx).map(|chunk| match chunk {
            Some(chunk) => Some(Ok(chunk)),
            None => self.connection.take_broken().map(Err),
        })
    }
}

fn no_cache(response: &mut Response<ResponseBody>) {
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `GET {hub}?id=...` with `Accept: text/event-stream`.
pub(super) fn server_sent_events(
    hub: Arc<HubShared>,
    token: String,
    identity: Option<Identity>,
    request: HttpRequest,
) -> Response<ResponseBody> {
    observe::sse_stream();
    let Some(connection) = hub.connections.get(&token) else {
        return unknown_connection();
    };
    if let Err(refused) = hub.connections.bind(&connection, Binding::ServerSentEvents) {
        return refusal(refused);
    }
    let Some(inbound) = connection.take_inbound() else {
        return unknown_connection();
    };
    let (events, event_stream) = mpsc::channel::<Bytes>(SSE_EVENTS_BUFFERED);
    // A comment first, so that browsers fire `open` right away.
    let _ = events.try_send(Bytes::from_static(b":\r\n"));

    let params = ConnectionParams {
        connection_id: connection.connection_id.clone(),
        transport: TransportKind::ServerSentEvents,
        identity,
        // Kept for the connection's life: detached from hyper's read buffer.
        request: Some(Arc::new(request.detached())),
    };
    let inbound = InboundStream {
        chunks: inbound,
        connection,
    };
    spawn_connection(
        &hub,
        token,
        params,
        inbound,
        SseSink::new(events),
        Duration::ZERO,
    );

    let mut response = Response::new(BodyExt::boxed(EventStreamBody {
        events: event_stream,
    }));
    no_cache(&mut response);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The SSE response body: events as the connection writes them; ends when the sink is dropped.
struct EventStreamBody {
    events: mpsc::Receiver<Bytes>,
}

impl http_body::Body for EventStreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.events
            .poll_recv(cx)
            .map(|event| event.map(|event| Ok(Frame::data(event))))
    }
}

fn poll_response(status: StatusCode, data: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(body(data));
    *response.status_mut() = status;
    no_cache(&mut response);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        header::EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
    response
}

/// What a long poll's request leads to: an answer now, or a wait on the connection's queue.
pub(super) enum LongPoll {
    Answered(Response<ResponseBody>),
    Wait(Arc<PollQueue>),
}

/// `GET {hub}?id=...` without `Accept: text/event-stream`: a long poll. The first one of a
/// connection starts it and is answered at once; later ones wait on its queue.
pub(super) fn long_poll(
    hub: &Arc<HubShared>,
    token: String,
    identity: Option<Identity>,
    request: HttpRequest,
) -> LongPoll {
    observe::long_poll();
    let Some(connection) = hub.connections.get(&token) else {
        return LongPoll::Answered(unknown_connection());
    };
    match connection.binding() {
        Binding::LongPolling(queue) | Binding::Closed(Some(queue)) => LongPoll::Wait(queue),
        Binding::Pending => LongPoll::Answered(start_long_polling(
            hub.clone(),
            connection,
            token,
            identity,
            request,
        )),
        Binding::Closed(None) => LongPoll::Answered(unknown_connection()),
        Binding::WebSockets | Binding::ServerSentEvents => {
            LongPoll::Answered(refusal(BindRefusal::OtherTransport))
        }
    }
}

/// A long poll's wait: the data the connection wrote, empty after `timeout`, or 204 once the
/// connection is over or another poll took this one's place.
pub(super) async fn wait_for_data(
    queue: Arc<PollQueue>,
    timeout: Duration,
) -> Response<ResponseBody> {
    match queue.poll(timeout).await {
        PollOutcome::Data(data) => poll_response(StatusCode::OK, data),
        PollOutcome::Empty => poll_response(StatusCode::OK, Bytes::new()),
        PollOutcome::Finished | PollOutcome::Superseded => {
            poll_response(StatusCode::NO_CONTENT, Bytes::new())
        }
    }
}

/// The first poll binds the connection and answers at once (200, empty); the handshake then
/// comes by POST and its response with the next poll.
fn start_long_polling(
    hub: Arc<HubShared>,
    connection: Arc<HttpConnection>,
    token: String,
    identity: Option<Identity>,
    request: HttpRequest,
) -> Response<ResponseBody> {
    let queue = PollQueue::new(hub.options.long_poll_buffer);
    if let Err(refused) = hub
        .connections
        .bind(&connection, Binding::LongPolling(queue.clone()))
    {
        return refusal(refused);
    }
    let Some(inbound) = connection.take_inbound() else {
        return unknown_connection();
    };
    let params = ConnectionParams {
        connection_id: connection.connection_id.clone(),
        transport: TransportKind::LongPolling,
        identity,
        // Kept for the connection's life: detached from hyper's read buffer.
        request: Some(Arc::new(request.detached())),
    };

    // A client that stops polling is let go after the disconnect timeout.
    let watched = connection.clone();
    let watched_queue = queue.clone();
    let disconnect_timeout = hub.options.disconnect_timeout;
    tokio::spawn(async move {
        if watched_queue.stopped_polling(disconnect_timeout).await {
            tracing::info!(connection = %watched.connection_id, "long-polling client stopped polling; ending the connection");
            watched.end_inbound().await;
        }
    });

    // Polls that come after the end learn that the connection is over (204) for a while.
    let linger = hub.options.disconnect_timeout;
    let inbound = InboundStream {
        chunks: inbound,
        connection,
    };
    spawn_connection(
        &hub,
        token,
        params,
        inbound,
        LongPollSink::new(queue),
        linger,
    );
    poll_response(StatusCode::OK, Bytes::new())
}

/// Runs an HTTP-transport connection to its end, then forgets its token after `linger`.
fn spawn_connection<S: TransportSink>(
    hub: &Arc<HubShared>,
    token: String,
    params: ConnectionParams,
    inbound: InboundStream,
    sink: S,
    linger: Duration,
) {
    let hub = hub.clone();
    tokio::spawn(async move {
        super::run_connection(hub.clone(), params, inbound, sink, None).await;
        if let Some(connection) = hub.connections.get(&token) {
            connection.mark_closed();
        }
        tokio::time::sleep(linger).await;
        hub.connections.remove(&token);
    });
}

/// The connection a `POST {hub}?id=...` writes to, or the answer that it cannot.
// The error is the answer itself, made only when a request is refused.
#[allow(clippy::result_large_err)]
pub(super) fn receiver(
    hub: &HubShared,
    token: &str,
) -> Result<Arc<HttpConnection>, Response<ResponseBody>> {
    let Some(connection) = hub.connections.get(token) else {
        return Err(unknown_connection());
    };
    match connection.binding() {
        Binding::WebSockets => Err(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST requests are not allowed for WebSocket connections.",
        )),
        Binding::Closed(_) => Err(unknown_connection()),
        Binding::Pending | Binding::ServerSentEvents | Binding::LongPolling(_) => Ok(connection),
    }
}

/// `POST {hub}?id=...`: client-to-server data for SSE and long polling, to the connection
/// [`receiver`] found; each chunk must be taken within `send_timeout`.
pub(super) async fn receive<B>(
    connection: Arc<HttpConnection>,
    send_timeout: Duration,
    request_body: B,
) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // One POST at a time per connection; the next waits its turn.
    let mut sender = connection.inbound_sender().lock().await;
    if sender.is_none() {
        return unknown_connection();
    }
    let mut request_body = std::pin::pin!(request_body);
    // Bytes of this body already handed to the connection core.
    let mut delivered = 0usize;
    // The error converted at once: a body's own error type need not be `Send`.
    while let Some(frame) = (request_body.frame().await).map(|f| f.map_err(Into::<BoxError>::into))
    {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                let too_large = past_length_limit(&*e);
                if delivered > 0 {
                    end_broken_stream(&mut sender, &connection, delivered);
                }
                return if too_large {
                    json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "The request body is too large.",
                    )
                } else {
                    text(
                        StatusCode::BAD_REQUEST,
                        "The request body could not be read.",
                    )
                };
            }
        };
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if chunk.is_empty() {
            continue;
        }
        let Some(inbound) = sender.as_ref() else {
            return unknown_connection();
        };
        let length = chunk.len();
        match tokio::time::timeout(send_timeout, inbound.send(chunk)).await {
            Ok(Ok(())) => delivered += length,
            Ok(Err(_)) => return unknown_connection(),
            Err(_) if delivered > 0 => {
                end_broken_stream(&mut sender, &connection, delivered);
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The connection stopped reading partway through this request; it is closed.",
                );
            }
            Err(_) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The connection is not reading; try again later.",
                )
            }
        }
    }
    text(StatusCode::OK, "")
}

/// A POST that broke off after part of its body reached the connection (too large, cut by
/// the client, or not read in time) has left the client-to-server stream with a hole, which
/// may fall in the middle of a record: whatever came next would be read against it. So the
/// stream ends there, with an error the connection core closes on once it has read what came
/// before (the client learns it from its next poll or event), and later POSTs find no
/// connection (a raw connection's `recv` just ends, with `None`). The reference goes on
/// reading the stream after such a hole.
fn end_broken_stream(
    sender: &mut Option<mpsc::Sender<Bytes>>,
    connection: &HttpConnection,
    delivered: usize,
) {
    tracing::debug!(
        connection = %connection.connection_id,
        delivered,
        "a POST broke off after part of its body was delivered; ending the connection"
    );
    let error = std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("a POST body broke off after {delivered} bytes"),
    );
    connection.break_inbound(sender, error);
}

/// Whether a body failed because it outgrew a length limit: `serve`'s, or a
/// `RequestBodyLimitLayer` in front of the hub (both are `http_body_util::Limited`), however
/// deep a framework wrapped the error (axum's `Body` does).
fn past_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source())
        .any(|e| e.is::<http_body_util::LengthLimitError>())
}

/// `DELETE {hub}?id=...`: the long-polling client is leaving.
pub(super) async fn delete(hub: &HubShared, token: &str) -> Response<ResponseBody> {
    let Some(connection) = hub.connections.get(token) else {
        return unknown_connection();
    };
    match connection.binding() {
        Binding::LongPolling(_) => {
            connection.end_inbound().await;
            text(StatusCode::ACCEPTED, "")
        }
        Binding::Closed(_) => text(StatusCode::ACCEPTED, ""),
        _ => text(
            StatusCode::BAD_REQUEST,
            "Cannot terminate this connection using the DELETE endpoint.",
        ),
    }
}
