//! The HTTP face of a hub: a `tower::Service` that answers negotiate and transport requests.
//! Mount it anywhere: the negotiate endpoint is recognised by its `/negotiate` suffix, so the
//! service works at a router's root path or under `nest_service`.

pub(crate) mod connections;
pub(crate) mod cors;
pub(crate) mod negotiate;
mod streaming;
pub(crate) mod token;
mod websocket;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::auth::{AuthRequest, Identity};
use crate::hub::HubShared;
use crate::log_limit::{LogLimiter, REPEAT_INTERVAL};
use crate::observe;
use crate::request::HttpRequest;
use crate::transport::TransportKind;

/// Boxed error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the hub produces.
pub type ResponseBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A hub as a `tower::Service<http::Request<B>>`; get one from [`Hub::service`](crate::Hub::service),
/// or from [`Hub::service_with`](crate::Hub::service_with) for one path of several.
///
/// `call` routes the request there and then (a negotiate, a WebSocket upgrade or the first
/// poll of a connection is done before it returns, and starts tasks), so call it on a tokio
/// runtime, as every server does; the future it returns is only for the routes that wait.
#[derive(Clone)]
pub struct HubService {
    routes: Routes,
    /// The hub's CORS policy, in front of every route.
    cors: Option<tower_http::cors::Cors<Routes>>,
}

/// Negotiate and the transports, behind the CORS policy.
#[derive(Clone)]
struct Routes {
    hub: Arc<HubShared>,
    /// The transports this endpoint serves and offers in negotiate.
    transports: Arc<[TransportKind]>,
}

impl HubService {
    pub(crate) fn new(hub: Arc<HubShared>, options: Option<EndpointOptions>) -> Self {
        let transports = match options {
            Some(options) => options.transports.into(),
            None => hub.options.transports.clone().into(),
        };
        let cors = hub.cors.clone();
        let routes = Routes { hub, transports };
        HubService {
            cors: cors.map(|layer| tower_layer::Layer::layer(&layer, routes.clone())),
            routes,
        }
    }
}

/// Options of one endpoint when a hub is mounted at several paths (`MapHub<THub>(path,
/// options)` in ASP.NET Core): every endpoint shares the hub's methods, registry, groups and
/// [`HubContext`](crate::HubContext); each may serve its own transports.
///
/// ```
/// use signalr_core::{EndpointOptions, Hub, TransportKind};
///
/// let hub = Hub::builder().build();
/// let everything = hub.service();
/// let without_websockets = hub.service_with(
///     EndpointOptions::new().transports([TransportKind::ServerSentEvents, TransportKind::LongPolling]),
/// );
/// # let _ = (everything, without_websockets);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointOptions {
    transports: Vec<TransportKind>,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions::new()
    }
}

impl EndpointOptions {
    /// Every transport.
    pub fn new() -> Self {
        EndpointOptions {
            transports: TransportKind::ALL.to_vec(),
        }
    }

    /// The transports this endpoint serves and offers in negotiate (the others answer 404,
    /// as in the reference). Panics on an empty list: an endpoint needs one.
    pub fn transports(mut self, transports: impl IntoIterator<Item = TransportKind>) -> Self {
        self.transports = transports.into_iter().collect();
        assert!(
            !self.transports.is_empty(),
            "an endpoint needs at least one transport"
        );
        self
    }
}

impl<B> tower_service::Service<Request<B>> for HubService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match &mut self.cors {
            Some(cors) => Box::pin(cors.call(request)),
            None => self.routes.call(request),
        }
    }
}

impl<B> tower_service::Service<Request<B>> for Routes
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Requests are told apart and answered synchronously where they can be; only the
    /// transports that wait (a long poll, a POST's body, a DELETE) box a future, and one that
    /// holds just what it waits on: a boxed future holding the whole request and every
    /// route's state was moved and copied at every request.
    fn call(&mut self, request: Request<B>) -> Self::Future {
        let query = Query::parse(request.uri().query());
        // Read once here, used again to route: every long poll passes this way.
        let shape = Shape {
            upgrade: websocket::is_upgrade(&request),
            event_stream: request.method() == Method::GET && accepts_event_stream(&request),
        };
        if request.method() == Method::OPTIONS {
            // A preflight the CORS policy allowed never gets here; anything else is answered
            // empty, as there is nothing to describe.
            return answered(empty(StatusCode::NO_CONTENT));
        }
        // A transport GET may carry a token negotiated on another process.
        let adopts = request.method() == Method::GET
            && query.id.is_some()
            && self.hub.options.portable_token_key.is_some()
            && !is_negotiate(request.uri().path());
        if self.hub.authenticator.is_none() && !adopts {
            let identity = match apply_policy(&self.hub, None, || remote_addr(&request)) {
                Ok(identity) => identity,
                Err(refusal) => return answered(refusal),
            };
            return route(
                self.hub.clone(),
                &self.transports,
                request,
                shape,
                query,
                identity,
            );
        }
        let hub = self.hub.clone();
        let transports = self.transports.clone();
        Box::pin(async move {
            // Browsers cannot set headers on WebSockets or EventSource: those may carry the
            // token in the query string.
            let token_in_query = shape.upgrade || shape.event_stream;
            let query_token = query.access_token.as_deref().filter(|_| token_in_query);
            // The parts one by one: a request (its body) need not be `Sync`.
            let auth_request = AuthRequest {
                method: request.method(),
                uri: request.uri(),
                headers: request.headers(),
                extensions: request.extensions(),
                query_token,
            };
            let identity = match authorize(&hub, auth_request).await {
                Ok(identity) => identity,
                Err(refusal) => return Ok(refusal),
            };
            if adopts {
                if let Some(token) = &query.id {
                    negotiate::adopt_portable_token(&hub, token).await;
                }
            }
            route(hub, &transports, request, shape, query, identity).await
        })
    }
}

/// The future of a request answered at once.
fn answered(response: Response<ResponseBody>) -> Routed {
    Box::pin(std::future::ready(Ok(response)))
}

/// The peer's address, as `serve` records it, for log lines.
fn remote_addr<B>(request: &Request<B>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<crate::RemoteAddr>()
        .map(|remote| remote.0)
}

/// What a route answers with.
type Routed = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

/// Runs a connection on the transport it opened: the hub's connection core, or the handler of
/// a raw connection endpoint (which never reconnects statefully).
pub(crate) async fn run_connection<I, S>(
    hub: Arc<HubShared>,
    params: crate::connection::ConnectionParams,
    inbound: I,
    sink: S,
    reattach: Option<tokio::sync::mpsc::Receiver<(I, S)>>,
) where
    I: futures_util::Stream<Item = std::io::Result<Bytes>> + Unpin + Send + Sync + 'static,
    S: crate::transport::TransportSink,
{
    match &hub.raw {
        Some(handler) => {
            let send_timeout = hub.options.send_timeout;
            crate::raw::run(handler.clone(), params, send_timeout, inbound, sink).await
        }
        None => crate::connection::run(hub, params, inbound, sink, reattach).await,
    }
}

/// Authenticates a request and applies the hub's policy: the caller's identity, or the 401/403
/// answer. Refusals are the reference's: an empty body, and for 401 a `WWW-Authenticate`
/// challenge; why a credential was refused goes to the log only, never to the client.
async fn authorize(
    hub: &HubShared,
    auth_request: AuthRequest<'_>,
) -> Result<Option<Identity>, Response<ResponseBody>> {
    let identity = match &hub.authenticator {
        None => None,
        Some(authenticator) => match authenticator.authenticate(&auth_request).await {
            Ok(identity) => identity,
            Err(refusal) => {
                let remote = auth_request.remote_addr();
                // Why goes to the log only (never to the client), and never the credential.
                static REFUSED: LogLimiter = LogLimiter::new(REPEAT_INTERVAL);
                if let Some(suppressed) = REFUSED.allow() {
                    tracing::warn!(reason = %refusal, remote = ?remote, suppressed, "authentication refused (401)");
                }
                observe::authentication_refused(401);
                return Err(unauthorized(Some("invalid_token")));
            }
        },
    };
    apply_policy(hub, identity, || auth_request.remote_addr())
}

/// The hub's policy applied to the caller's identity: the identity, or the 401/403 answer.
// The error is the answer itself, made only when a request is refused.
#[allow(clippy::result_large_err)]
fn apply_policy(
    hub: &HubShared,
    identity: Option<Identity>,
    remote: impl FnOnce() -> Option<std::net::SocketAddr>,
) -> Result<Option<Identity>, Response<ResponseBody>> {
    match &hub.hub_policy {
        Some(policy) if !policy.allows(identity.as_ref()) => {
            let status = if identity.is_some() { 403 } else { 401 };
            static DENIED: LogLimiter = LogLimiter::new(REPEAT_INTERVAL);
            if let Some(suppressed) = DENIED.allow() {
                let remote = remote();
                tracing::warn!(status, remote = ?remote, suppressed, "the hub's policy refused the caller");
            }
            observe::authentication_refused(status);
            Err(match identity {
                None => unauthorized(None),
                Some(_) => empty(StatusCode::FORBIDDEN),
            })
        }
        _ => Ok(identity),
    }
}

/// 401 with the bearer challenge (`error="invalid_token"` when a credential was refused).
fn unauthorized(error: Option<&'static str>) -> Response<ResponseBody> {
    let mut response = empty(StatusCode::UNAUTHORIZED);
    let challenge = match error {
        Some("invalid_token") => HeaderValue::from_static("Bearer error=\"invalid_token\""),
        _ => HeaderValue::from_static("Bearer"),
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    response
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(body(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// What kind of transport request this is, from its headers.
#[derive(Clone, Copy)]
struct Shape {
    /// It asks to upgrade to a WebSocket.
    upgrade: bool,
    /// A GET that accepts `text/event-stream`: Server-Sent Events.
    event_stream: bool,
}

fn route<B>(
    hub: Arc<HubShared>,
    transports: &[TransportKind],
    request: Request<B>,
    shape: Shape,
    query: Query,
    identity: Option<Identity>,
) -> Routed
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let method = request.method();
    if is_negotiate(request.uri().path()) {
        return answered(match *method {
            Method::POST => negotiate::negotiate(&hub, &query, transports),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, ""),
        });
    }
    match *method {
        Method::GET if shape.upgrade => answered(websocket::upgrade(
            hub, transports, request, query, identity,
        )),
        Method::GET => {
            let transport = if shape.event_stream {
                TransportKind::ServerSentEvents
            } else {
                TransportKind::LongPolling
            };
            if !transports.contains(&transport) {
                return answered(transport_disabled(transport));
            }
            let Some(token) = query.id else {
                return answered(text(StatusCode::BAD_REQUEST, "Connection ID required"));
            };
            // Moved, not copied: the body of a transport GET is never read.
            let (parts, _body) = request.into_parts();
            let request = HttpRequest::from_parts(parts);
            if transport == TransportKind::ServerSentEvents {
                return answered(streaming::server_sent_events(hub, token, identity, request));
            }
            match streaming::long_poll(&hub, token, identity, request) {
                streaming::LongPoll::Answered(response) => answered(response),
                streaming::LongPoll::Wait(queue) => {
                    let timeout = hub.options.long_poll_timeout;
                    drop(hub);
                    Box::pin(async move { Ok(streaming::wait_for_data(queue, timeout).await) })
                }
            }
        }
        Method::POST => {
            let Some(token) = query.id else {
                return answered(text(StatusCode::BAD_REQUEST, "Connection ID required"));
            };
            let connection = match streaming::receiver(&hub, &token) {
                Ok(connection) => connection,
                Err(refusal) => return answered(refusal),
            };
            let send_timeout = hub.options.send_timeout;
            let body = request.into_body();
            drop(hub);
            Box::pin(async move { Ok(streaming::receive(connection, send_timeout, body).await) })
        }
        Method::DELETE => {
            let Some(token) = query.id else {
                return answered(text(StatusCode::BAD_REQUEST, "Connection ID required"));
            };
            if !transports.contains(&TransportKind::LongPolling) {
                return answered(transport_disabled(TransportKind::LongPolling));
            }
            Box::pin(async move { Ok(streaming::delete(&hub, &token).await) })
        }
        _ => answered(text(StatusCode::METHOD_NOT_ALLOWED, "")),
    }
}

/// Whether a path is a negotiate endpoint's: the hub's path with `/negotiate` after it.
fn is_negotiate(path: &str) -> bool {
    path.ends_with("/negotiate") || path == "negotiate"
}

fn accepts_event_stream<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

pub(crate) fn transport_disabled(transport: TransportKind) -> Response<ResponseBody> {
    text(
        StatusCode::NOT_FOUND,
        &format!(
            "{} transport not supported by this end point type",
            transport.as_str()
        ),
    )
}

/// The query parameters the hub reads; keys match case-insensitively like ASP.NET's. Others
/// (the long-polling cache buster `_`, an app's own) are ignored.
#[derive(Default)]
pub(crate) struct Query {
    pub(crate) id: Option<String>,
    pub(crate) negotiate_version: Option<String>,
    pub(crate) access_token: Option<String>,
    pub(crate) use_stateful_reconnect: bool,
}

impl Query {
    /// Reads the parameters the hub knows. Every long-polling request carries a query, so the
    /// common case (nothing escaped) is read in place; a pair with `%` or `+` is decoded as
    /// `application/x-www-form-urlencoded` says, exactly as `form_urlencoded` decodes it.
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let mut parsed = Query::default();
        for pair in query.unwrap_or("").split('&') {
            if pair.is_empty() {
                continue;
            }
            if pair.bytes().any(|b| b == b'%' || b == b'+') {
                if let Some((key, value)) = form_urlencoded::parse(pair.as_bytes()).next() {
                    parsed.set(&key, &value);
                }
            } else {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                parsed.set(key, value);
            }
        }
        parsed
    }

    /// The same, with every pair decoded by `form_urlencoded`: what `parse` must agree with.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn parse_decoding_everything(query: Option<&str>) -> Self {
        let mut parsed = Query::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            parsed.set(&key, &value);
        }
        parsed
    }

    fn set(&mut self, key: &str, value: &str) {
        if key.eq_ignore_ascii_case("id") {
            self.id = Some(value.to_owned());
        } else if key.eq_ignore_ascii_case("negotiateVersion") {
            self.negotiate_version = Some(value.to_owned());
        } else if key.eq_ignore_ascii_case("useStatefulReconnect") {
            self.use_stateful_reconnect = value.eq_ignore_ascii_case("true");
        } else if key == "access_token" {
            self.access_token = Some(value.to_owned());
        }
    }
}

pub(crate) fn body(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn text(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut response = Response::new(body(message.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A short JSON error, `{"error": message}`, for refusals at the HTTP level.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let mut response = json(&serde_json::json!({ "error": message }));
    *response.status_mut() = status;
    response
}

pub(crate) fn json(value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(body(value.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::Query;

    fn fields(query: &Query) -> (Option<&str>, Option<&str>, Option<&str>, bool) {
        (
            query.id.as_deref(),
            query.negotiate_version.as_deref(),
            query.access_token.as_deref(),
            query.use_stateful_reconnect,
        )
    }

    #[test]
    fn queries_read_in_place_as_form_urlencoded_decodes_them() {
        for text in [
            "",
            "id=abc&_=1733050000000",
            "ID=abc",
            "id=a%2Bb%3D%3D",
            "id=a+b",
            "i%64=escaped-key",
            "id=first&id=second",
            "id",
            "id=",
            "=x&&id=y&",
            "negotiateVersion=1&useStatefulReconnect=TRUE",
            "useStatefulReconnect=yes",
            "access_token=eyJ.a-b_c.%2F&access_token=",
            "id=%ZZ&id2=%",
            "id=%C3%A9%FF",
            "id=a=b=c",
        ] {
            let fast = Query::parse(Some(text));
            let reference = Query::parse_decoding_everything(Some(text));
            assert_eq!(fields(&fast), fields(&reference), "{text:?}");
        }
        let query = Query::parse(Some("id=abc&_=1&negotiateVersion=1&access_token=t"));
        assert_eq!(fields(&query), (Some("abc"), Some("1"), Some("t"), false));
        assert_eq!(Query::parse(Some("i%64=x")).id.as_deref(), Some("x"));
        assert_eq!(Query::parse(Some("id=a+b%21")).id.as_deref(), Some("a b!"));
    }
}
