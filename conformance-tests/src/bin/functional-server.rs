//! The counterpart of the test app behind Microsoft's JavaScript-client functional tests
//! (dotnet/aspnetcore `src/SignalR/clients/ts/FunctionalTests`), written on `signalr-core`'s
//! public API alone, so that what those tests ask of a server is asked of ours.
//!
//! Binds 127.0.0.1 on a free port and prints `LISTENING <port>` once ready. Endpoints:
//! - `/testhub` (also `/testHub`, where the redirect points) and `/testhub-nowebsockets` (the
//!   same hub, one registry, Server-Sent Events and long polling only): the `TestHub` methods.
//! - `/authorizedhub`: bearer tokens from `/generateJwtToken` (HS256 with a key drawn at start,
//!   `nameid=testuser`, valid 5 s); anonymous negotiates get the reference's bare 401.
//! - `/echo`: a raw connection sending back what it receives, for clients that carry the
//!   `testCookie` set by negotiate (others are dropped at once, as the reference does).
//! - `/echoredirect/...` answers 307 (the method kept) to the same path under `/echo`; `/redirect/negotiate`
//!   answers a redirect negotiate to `<baseUrl>/testHub?numRedirects=N` (N counts redirects).
//! - Every negotiate sets `testCookie=testValue`, `testCookie2=testValue2` and an expired
//!   `expiredCookie`; `/bad-negotiate/...` answers 400 `Some response from server`.
//! - `GET /clientresult/{id}` asks that connection for a `Result` (an integer) and answers it,
//!   or the error text; `GET /deployment` describes the build.
//! - `/uncreatable`: a hub whose connections fail as they start (the reference's hub that cannot
//!   be constructed), closing with that error.
//! - Pages on `localhost` or `127.0.0.1` (any port) may call every route with credentials
//!   (CORS), as the reference's test app allows its browser runner.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use signalr_core::auth::JwtAuthenticator;
use signalr_core::protocol::{Binary, DateTime};
use signalr_core::{
    Cancellation, Clients, ConnectionHandler, Context, EndpointOptions, Hub, HubContext, HubError,
    Policy, TransportKind, UploadStream,
};

/// The reference throws `InvalidOperationException`; with detailed errors its type name and
/// message reach the client, and this type gives ours the same text.
#[derive(Debug)]
struct InvalidOperationException(String);

impl std::fmt::Display for InvalidOperationException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidOperationException {}

/// Property names as written (PascalCase), as the reference's JSON options keep them.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CustomObject {
    name: String,
    value: i32,
}

/// Bytes and instants in each protocol's .NET form: base64 and ISO 8601 in JSON, `bin` and the
/// timestamp extension in MessagePack.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ComplexObject {
    byte_array: Binary,
    date_time: DateTime,
    guid: String,
    int_array: Vec<i32>,
    string: String,
}

async fn echo(message: String) -> String {
    message
}

async fn get_caller_connection_id(context: Context) -> String {
    context.connection_id().to_owned()
}

async fn get_num_redirects(context: Context) -> Result<i64, HubError> {
    context
        .http_request()
        .and_then(|request| request.query("numRedirects"))
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| HubError::new("The connection was not made through the redirect."))
}

async fn throw_exception(message: String) -> Result<(), InvalidOperationException> {
    Err(InvalidOperationException(message))
}

async fn invoke_with_string(clients: Clients, message: String) -> Result<(), HubError> {
    clients.caller().send("Message", (message,)).await?;
    Ok(())
}

async fn send_custom_object(clients: Clients, object: CustomObject) -> Result<(), HubError> {
    clients.caller().send("CustomObject", (object,)).await?;
    Ok(())
}

async fn stream() -> impl Stream<Item = &'static str> {
    futures_util::stream::iter(["a", "b", "c"])
}

/// Never yields; when the caller cancels, it is told so with `StreamCanceled`.
async fn infinite_stream(
    context: Context,
    hub: HubContext,
    cancellation: Cancellation,
) -> impl Stream<Item = String> {
    let connection_id = context.connection_id().to_owned();
    tokio::spawn(async move {
        cancellation.cancelled().await;
        // The caller may be gone already (a cancel by disconnecting): nothing to tell then.
        let _ = hub
            .clients()
            .client(connection_id)
            .send("StreamCanceled", ())
            .await;
    });
    futures_util::stream::pending()
}

async fn streaming_concat(mut parts: UploadStream<String>) -> Result<String, HubError> {
    let mut whole = String::new();
    while let Some(part) = parts.next().await {
        whole.push_str(&part?);
    }
    Ok(whole)
}

async fn empty_stream() -> impl Stream<Item = i32> {
    futures_util::stream::empty()
}

/// Fails before producing a stream at all, as the reference's method throws.
async fn stream_throw_exception(
    message: String,
) -> Result<futures_util::stream::Empty<Result<String, HubError>>, InvalidOperationException> {
    Err(InvalidOperationException(message))
}

async fn get_active_transport_name(context: Context) -> &'static str {
    context.transport().as_str()
}

async fn echo_complex_object(object: ComplexObject) -> ComplexObject {
    object
}

async fn send_complex_object() -> Result<ComplexObject, HubError> {
    Ok(ComplexObject {
        byte_array: Binary::from(vec![1u8, 2, 3]),
        // 2000-01-01T00:00:00Z
        date_time: DateTime::from_unix_millis(946_684_800_000)
            .map_err(|e| HubError::internal(e.to_string()))?,
        guid: "00010203-0405-0607-0706-050403020100".to_owned(),
        int_array: vec![1, 2, 3],
        string: "hello world".to_owned(),
    })
}

fn request_header(context: &Context, name: &str) -> Option<String> {
    context
        .http_request()?
        .headers()
        .get(name)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

async fn get_content_type_header(context: Context) -> Option<String> {
    request_header(&context, "content-type")
}

async fn get_header(context: Context, name: String) -> Option<String> {
    request_header(&context, &name)
}

async fn get_cookie(context: Context, name: String) -> Option<String> {
    context.http_request()?.cookie(&name)
}

async fn get_user_name_identifier(context: Context) -> String {
    context.user_identifier().unwrap_or_default().to_owned()
}

async fn get_user_claim(context: Context, kind: String) -> String {
    context
        .user()
        .and_then(|user| user.claim(&kind))
        .unwrap_or_default()
        .to_owned()
}

fn test_hub() -> Hub {
    Hub::builder()
        .enable_detailed_errors(true)
        .method("Echo", echo)
        .method("GetCallerConnectionId", get_caller_connection_id)
        .method("GetNumRedirects", get_num_redirects)
        .method("ThrowException", throw_exception)
        .method("InvokeWithString", invoke_with_string)
        .method("SendCustomObject", send_custom_object)
        .method("Stream", stream)
        .method("InfiniteStream", infinite_stream)
        .method("StreamingConcat", streaming_concat)
        .method("EmptyStream", empty_stream)
        .method("StreamThrowException", stream_throw_exception)
        .method("GetActiveTransportName", get_active_transport_name)
        .method("EchoComplexObject", echo_complex_object)
        .method("SendComplexObject", send_complex_object)
        .method("GetContentTypeHeader", get_content_type_header)
        .method("GetHeader", get_header)
        .method("GetCookie", get_cookie)
        .build()
}

fn authorized_hub(secret: &[u8]) -> Hub {
    Hub::builder()
        .enable_detailed_errors(true)
        .authenticator(JwtAuthenticator::hs256(secret))
        .require(Policy::authenticated())
        .method("Echo", echo)
        .method("GetUserNameIdentifier", get_user_name_identifier)
        .method("GetUserClaim", get_user_claim)
        .build()
}

/// A hub whose every connection fails as it starts: the counterpart of the reference's hub
/// whose constructor needs a service that does not exist.
fn uncreatable_hub() -> Hub {
    Hub::builder()
        .enable_detailed_errors(true)
        .on_connected(|_: Context| async {
            Err::<(), _>(InvalidOperationException(
                "Unable to resolve service for type 'System.Object' while attempting to activate 'FunctionalTests.UncreatableHub'.".to_owned(),
            ))
        })
        .method("Echo", echo)
        .build()
}

/// Sends back whatever arrives, for connections whose negotiate cookie came back with them.
fn echo_handler() -> ConnectionHandler {
    ConnectionHandler::new(|mut connection| async move {
        let has_cookie = connection
            .http_request()
            .and_then(|request| request.cookie("testCookie"))
            .is_some();
        if !has_cookie {
            return;
        }
        while let Some(data) = connection.recv().await {
            if connection.send(data).await.is_err() {
                break;
            }
        }
    })
}

#[derive(Clone)]
struct AppState {
    test_hub: HubContext,
    secret: Arc<Vec<u8>>,
    redirects: Arc<AtomicU64>,
}

#[derive(Serialize)]
struct TokenClaims<'a> {
    nameid: &'a str,
    iss: &'a str,
    aud: &'a str,
    exp: u64,
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

async fn generate_jwt_token(State(state): State<AppState>) -> Response {
    let claims = TokenClaims {
        nameid: "testuser",
        iss: "SignalRTestServer",
        aud: "SignalRTests",
        exp: unix_seconds() + 5,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(&state.secret);
    match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
        Ok(token) => token.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not sign a token");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"error": "could not issue a token"})),
            )
                .into_response()
        }
    }
}

/// The `Result` a client returns, as text; its error text when it fails or gives none.
async fn client_result(
    State(state): State<AppState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    // axum's own rejection text would name its internals; say what is wrong instead.
    let Ok(Path(id)) = id else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "the connection id must be UTF-8 text"})),
        )
            .into_response();
    };
    let answer = state
        .test_hub
        .clients()
        .client(id)
        .invoke::<i32, _>("Result", ())
        .await;
    match answer {
        Ok(value) => value.to_string(),
        Err(e) => {
            use std::error::Error as _;
            match e.source() {
                Some(source) => source.to_string(),
                None => e.to_string(),
            }
        }
    }
    .into_response()
}

async fn deployment() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "Name": env!("CARGO_PKG_NAME"),
        "Version": env!("CARGO_PKG_VERSION"),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedirectQuery {
    #[serde(default)]
    base_url: String,
}

/// A negotiate answer that sends the client to the test hub, counting how often it did.
async fn redirect(State(state): State<AppState>, Query(query): Query<RedirectQuery>) -> Response {
    let count = state.redirects.fetch_add(1, Ordering::SeqCst) + 1;
    let url = format!("{}/testHub?numRedirects={count}", query.base_url);
    axum::Json(serde_json::json!({ "url": url })).into_response()
}

async fn bad_negotiate() -> (StatusCode, &'static str) {
    (StatusCode::BAD_REQUEST, "Some response from server")
}

/// `/echoredirect/<rest>?<query>` -> 307 (a POST stays a POST) to `/echo/<rest>?<query>`.
async fn echo_redirect(request: Request) -> Response {
    let mut target = request.uri().path().replacen("/echoredirect", "/echo", 1);
    if let Some(query) = request.uri().query() {
        target = format!("{target}?{query}");
    }
    // Absolute where the Host is known: Node's EventSource cannot resolve a relative Location.
    if let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        target = format!("http://{host}{target}");
    }
    match HeaderValue::from_str(&target) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Every negotiate sets two cookies for later requests to carry and one already expired.
async fn negotiate_cookies(request: Request, next: Next) -> Response {
    let is_negotiate = request.uri().path().contains("/negotiate");
    let mut response = next.run(request).await;
    if is_negotiate {
        for cookie in [
            "testCookie=testValue; Path=/",
            "testCookie2=testValue2; Path=/",
            "expiredCookie=doesntmatter; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        ] {
            response
                .headers_mut()
                .append(header::SET_COOKIE, HeaderValue::from_static(cookie));
        }
    }
    response
}

/// Whether `origin` is a page served from this machine (`http(s)://localhost:*`,
/// `http(s)://127.0.0.1:*`), the only origins the reference's test app lets in.
fn is_loopback_origin(origin: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        origin.strip_prefix(scheme).is_some_and(|rest| {
            ["localhost:", "127.0.0.1:"].iter().any(|host| {
                rest.strip_prefix(host).is_some_and(|port| {
                    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                })
            })
        })
    })
}

/// CORS with credentials for loopback pages (a browser test runner serves its page on its own
/// port), over every route; a preflight from such a page is answered here, 204.
async fn loopback_cors(request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .filter(|origin| origin.to_str().is_ok_and(is_loopback_origin))
        .cloned();
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let mut response = if request.method() == axum::http::Method::OPTIONS {
        let mut preflight = StatusCode::NO_CONTENT.into_response();
        let headers = preflight.headers_mut();
        for (asked, allowed) in [
            (
                header::ACCESS_CONTROL_REQUEST_METHOD,
                header::ACCESS_CONTROL_ALLOW_METHODS,
            ),
            (
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                header::ACCESS_CONTROL_ALLOW_HEADERS,
            ),
        ] {
            if let Some(value) = request.headers().get(&asked) {
                headers.insert(allowed, value.clone());
            }
        }
        preflight
    } else {
        next.run(request).await
    };
    let granted = [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
        (
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ),
    ];
    for (name, value) in granted {
        response.headers_mut().insert(name, value);
    }
    // The answer depends on the Origin: caches must not hand it to another page.
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// A signing key nobody else knows: drawn from the OS at every start.
fn random_secret() -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut secret = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let secret = random_secret()?;
    let hub = test_hub();
    let authorized = authorized_hub(&secret);
    let uncreatable = uncreatable_hub();
    let state = AppState {
        test_hub: hub.context(),
        secret: Arc::new(secret),
        redirects: Arc::new(AtomicU64::new(0)),
    };

    let app = Router::new()
        .nest_service("/testhub", hub.service())
        // Where the redirect points (ASP.NET Core routes ignore case; axum's do not).
        .nest_service("/testHub", hub.service())
        .nest_service(
            "/testhub-nowebsockets",
            hub.service_with(
                EndpointOptions::new()
                    .transports([TransportKind::ServerSentEvents, TransportKind::LongPolling]),
            ),
        )
        .nest_service("/authorizedhub", authorized.service())
        .nest_service("/uncreatable", uncreatable.service())
        .nest_service("/echo", echo_handler().service())
        // The bare path too: the transport requests go to the URL the client was given.
        .route("/echoredirect", any(echo_redirect))
        .route("/echoredirect/{*rest}", any(echo_redirect))
        .route("/redirect/negotiate", get(redirect).post(redirect))
        .route(
            "/bad-negotiate/negotiate",
            get(bad_negotiate).post(bad_negotiate),
        )
        .route("/generateJwtToken", get(generate_jwt_token))
        .route("/clientresult/{id}", get(client_result))
        .route("/deployment", get(deployment))
        .with_state(state)
        .layer(axum::middleware::from_fn(negotiate_cookies))
        .layer(axum::middleware::from_fn(loopback_cors));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?.port());

    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            signalr_core::shutdown_signal().await;
            tokio::join!(
                hub.shutdown(),
                authorized.shutdown(),
                uncreatable.shutdown()
            );
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::is_loopback_origin;

    #[test]
    fn only_pages_served_from_this_machine_are_loopback_origins() {
        for allowed in [
            "http://localhost:9876",
            "https://localhost:1",
            "http://127.0.0.1:5000",
            "https://127.0.0.1:443",
        ] {
            assert!(is_loopback_origin(allowed), "{allowed}");
        }
        for refused in [
            "http://localhost",
            "http://localhost:",
            "http://localhost:80/path",
            "http://localhost.evil.example:80",
            "http://127.0.0.1.evil.example:80",
            "http://127.0.0.2:80",
            "ftp://localhost:21",
            "null",
            "",
            "http://localhost:80 ",
        ] {
            assert!(!is_loopback_origin(refused), "{refused}");
        }
    }
}
