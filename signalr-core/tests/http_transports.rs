//! Server-Sent Events and long polling at the HTTP level: the status codes, headers and bodies
//! the reference server gives, over real loopback sockets; and what a raw connection's
//! WebSocket carries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use signalr_core::{Context, Hub, HubBuilder, TransportKind};
use tokio::net::TcpListener;

const RS: &str = "\u{1e}";
const WAIT: Duration = Duration::from_secs(5);

struct Server {
    base: String,
    hub: Hub,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Server {
    async fn start(builder: HubBuilder) -> Server {
        let hub = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = hub.clone();
        tokio::spawn(async move {
            signalr_core::serve_with_shutdown(listener, "/hub", served, std::future::pending())
                .await
        });
        Server {
            base: format!("http://127.0.0.1:{port}/hub"),
            hub,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(
        &self,
        method: Method,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> http::Response<Incoming> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{query}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .expect("response in time")
            .unwrap()
    }

    /// A whole response: status and body.
    async fn call(
        &self,
        method: Method,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, Bytes) {
        let response = self.send(method, query, headers, body).await;
        let status = response.status();
        let body = tokio::time::timeout(WAIT, response.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        (status, body)
    }

    async fn negotiate(&self) -> String {
        let (status, body) = self
            .call(Method::POST, "/negotiate?negotiateVersion=1", &[], b"")
            .await;
        assert_eq!(status, StatusCode::OK);
        let value: Value = serde_json::from_slice(&body).unwrap();
        value["connectionToken"].as_str().unwrap().to_owned()
    }

    /// Opens the SSE stream of a negotiated connection and reads its opening comment.
    async fn open_sse(&self, token: &str) -> Incoming {
        let response = self
            .send(
                Method::GET,
                &format!("?id={token}"),
                &[("Accept", "text/event-stream")],
                b"",
            )
            .await;
        let mut body = response.into_body();
        let comment = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(comment.into_data().unwrap(), Bytes::from_static(b":\r\n"));
        body
    }

    async fn poll(&self, token: &str) -> (StatusCode, Bytes) {
        self.call(Method::GET, &format!("?id={token}&_=1"), &[], b"")
            .await
    }

    async fn post(&self, token: &str, body: &[u8]) -> StatusCode {
        self.call(Method::POST, &format!("?id={token}"), &[], body)
            .await
            .0
    }
}

async fn echo(value: String) -> String {
    value
}

fn hub() -> HubBuilder {
    Hub::builder().method("Echo", echo)
}

fn invocation(id: &str, value: &str) -> Vec<u8> {
    format!(
        "{}{RS}",
        json!({"type": 1, "invocationId": id, "target": "Echo", "arguments": [value]})
    )
    .into_bytes()
}

fn handshake(protocol: &str) -> Vec<u8> {
    format!("{{\"protocol\":\"{protocol}\",\"version\":1}}{RS}").into_bytes()
}

#[tokio::test]
async fn long_polling_round_trip_with_the_reference_status_codes() {
    let server = Server::start(hub()).await;
    let token = server.negotiate().await;

    // The first poll answers at once, empty, and binds the transport.
    let response = server
        .send(Method::GET, &format!("?id={token}&_=1"), &[], b"")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(response.headers()["cache-control"], "no-cache, no-store");
    assert!(response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());

    // The handshake comes by POST, its answer with the next poll; then hub messages.
    assert_eq!(
        server.post(&token, &handshake("json")).await,
        StatusCode::OK
    );
    assert_eq!(
        server.poll(&token).await,
        (StatusCode::OK, Bytes::from(format!("{{}}{RS}")))
    );
    // Two invocations in one POST; both completions come back in one poll.
    let mut both = invocation("1", "a");
    both.extend(invocation("2", "b"));
    assert_eq!(server.post(&token, &both).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = server.poll(&token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8(body.to_vec()).unwrap(),
        format!("{{\"type\":3,\"invocationId\":\"1\",\"result\":\"a\"}}{RS}{{\"type\":3,\"invocationId\":\"2\",\"result\":\"b\"}}{RS}")
    );

    // A newer poll ends the pending one with 204 and gets the data itself.
    let older = {
        let client = server.client.clone();
        let uri = format!("{}?id={token}&_=2", server.base);
        tokio::spawn(async move {
            let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            client.request(request).await.unwrap().status()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let newer = {
        let client = server.client.clone();
        let uri = format!("{}?id={token}&_=3", server.base);
        tokio::spawn(async move {
            let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            let response = client.request(request).await.unwrap();
            (
                response.status(),
                response.into_body().collect().await.unwrap().to_bytes(),
            )
        })
    };
    assert_eq!(
        tokio::time::timeout(WAIT, older).await.unwrap().unwrap(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.post(&token, &invocation("3", "c")).await,
        StatusCode::OK
    );
    let (status, body) = tokio::time::timeout(WAIT, newer).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("\"result\":\"c\""));

    // Other transports cannot take over; WebSocket-only requests are refused.
    let (status, _) = server
        .call(
            Method::GET,
            &format!("?id={token}"),
            &[("Accept", "text/event-stream")],
            b"",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // DELETE ends the connection: 202, then polls learn it is over (204).
    let (status, _) = server
        .call(Method::DELETE, &format!("?id={token}"), &[], b"")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The hub's final Close record may still be collected by one poll; then 204.
    let (mut status, body) = server.poll(&token).await;
    if status == StatusCode::OK {
        assert_eq!(body, Bytes::from(format!("{{\"type\":7}}{RS}")));
        status = server.poll(&token).await.0;
    }
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.hub.connection_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.poll(&token).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn unknown_ids_and_missing_ids() {
    let server = Server::start(hub()).await;
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let (status, body) = server.call(method.clone(), "?id=nope", &[], b"").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::NOT_FOUND, &b"No Connection with that ID"[..]),
            "{method}"
        );
        let (status, body) = server.call(method.clone(), "", &[], b"").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::BAD_REQUEST, &b"Connection ID required"[..]),
            "{method}"
        );
    }
    let (status, _) = server
        .call(
            Method::GET,
            "?id=nope",
            &[("Accept", "text/event-stream")],
            b"",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn empty_poll_after_the_poll_timeout_and_cleanup_when_polling_stops() {
    let disconnected = Arc::new(Mutex::new(0));
    let counter = disconnected.clone();
    let server = Server::start(
        hub()
            .long_poll_timeout(Duration::from_millis(300))
            .disconnect_timeout(Duration::from_millis(800))
            .on_disconnected(move |_ctx: Context, _error: Option<String>| {
                let counter = counter.clone();
                async move { *counter.lock().unwrap() += 1 }
            }),
    )
    .await;
    let token = server.negotiate().await;
    assert_eq!(server.poll(&token).await.0, StatusCode::OK);
    assert_eq!(
        server.post(&token, &handshake("json")).await,
        StatusCode::OK
    );
    assert_eq!(
        server.poll(&token).await.1,
        Bytes::from(format!("{{}}{RS}"))
    );
    // Nothing to send: the poll waits for the poll timeout, then answers 200 empty.
    let started = std::time::Instant::now();
    assert_eq!(server.poll(&token).await, (StatusCode::OK, Bytes::new()));
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.hub.connection_count(), 1);
    // No long-polling pings: keep-alive is the poll itself.
    // The client stops polling: after the disconnect timeout the connection is gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.hub.connection_count(), 0);
    assert_eq!(*disconnected.lock().unwrap(), 1);
}

#[tokio::test]
async fn messagepack_over_long_polling_is_binary() {
    let server = Server::start(hub()).await;
    let token = server.negotiate().await;
    assert_eq!(server.poll(&token).await.0, StatusCode::OK);
    assert_eq!(
        server.post(&token, &handshake("messagepack")).await,
        StatusCode::OK
    );
    assert_eq!(
        server.poll(&token).await.1,
        Bytes::from(format!("{{}}{RS}"))
    );
    // [1, {}, "1", "Echo", ["hi"]]
    let invocation = [
        0x0e, 0x95, 0x01, 0x80, 0xa1, 0x31, 0xa4, b'E', b'c', b'h', b'o', 0x91, 0xa2, b'h', b'i',
    ];
    assert_eq!(server.post(&token, &invocation).await, StatusCode::OK);
    let (status, body) = server.poll(&token).await;
    assert_eq!(status, StatusCode::OK);
    // [3, {}, "1", 3, "hi"]
    assert_eq!(
        &body[..],
        &[0x09, 0x95, 0x03, 0x80, 0xa1, 0x31, 0x03, 0xa2, b'h', b'i']
    );
}

#[tokio::test]
async fn server_sent_events_stream_records_as_data_lines() {
    let server = Server::start(hub()).await;
    let token = server.negotiate().await;
    let response = server
        .send(
            Method::GET,
            &format!("?id={token}"),
            &[("Accept", "text/event-stream")],
            b"",
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache, no-store");
    let mut body = response.into_body();
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b":\r\n"));

    // A second SSE request for the same connection: 409.
    let (status, _) = server
        .call(
            Method::GET,
            &format!("?id={token}"),
            &[("Accept", "text/event-stream")],
            b"",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // DELETE is for long polling only.
    let (status, _) = server
        .call(Method::DELETE, &format!("?id={token}"), &[], b"")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    assert_eq!(
        server.post(&token, &handshake("json")).await,
        StatusCode::OK
    );
    let frame = tokio::time::timeout(WAIT, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        frame.into_data().unwrap(),
        Bytes::from(format!("data: {{}}{RS}\r\n\r\n"))
    );
    assert_eq!(
        server.post(&token, &invocation("1", "x")).await,
        StatusCode::OK
    );
    let frame = tokio::time::timeout(WAIT, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        frame.into_data().unwrap(),
        Bytes::from(format!(
            "data: {{\"type\":3,\"invocationId\":\"1\",\"result\":\"x\"}}{RS}\r\n\r\n"
        ))
    );

    // The client's Close ends the connection and the response.
    assert_eq!(
        server
            .post(&token, format!("{{\"type\":7}}{RS}").as_bytes())
            .await,
        StatusCode::OK
    );
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        format!("data: {{\"type\":7}}{RS}\r\n\r\n")
    );
}

#[tokio::test]
async fn messagepack_over_sse_is_refused_in_the_handshake() {
    let server = Server::start(hub()).await;
    let token = server.negotiate().await;
    let body = server.open_sse(&token).await;
    assert_eq!(
        server.post(&token, &handshake("messagepack")).await,
        StatusCode::OK
    );
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        format!("data: {{\"error\":\"Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format.\"}}{RS}\r\n\r\n")
    );
}

#[tokio::test]
async fn disabled_transports_are_not_offered_and_not_served() {
    let server = Server::start(hub().transports([TransportKind::LongPolling])).await;
    let (_, body) = server
        .call(Method::POST, "/negotiate?negotiateVersion=1", &[], b"")
        .await;
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        value["availableTransports"],
        json!([{"transport": "LongPolling", "transferFormats": ["Text", "Binary"]}])
    );
    let token = value["connectionToken"].as_str().unwrap();
    let (status, body) = server
        .call(
            Method::GET,
            &format!("?id={token}"),
            &[("Accept", "text/event-stream")],
            b"",
        )
        .await;
    assert_eq!(
        (status, &body[..]),
        (
            StatusCode::NOT_FOUND,
            &b"ServerSentEvents transport not supported by this end point type"[..]
        )
    );
    let upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let (status, body) = server
        .call(Method::GET, &format!("?id={token}"), &upgrade, b"")
        .await;
    assert_eq!(
        (status, &body[..]),
        (
            StatusCode::NOT_FOUND,
            &b"WebSockets transport not supported by this end point type"[..]
        )
    );
    // Long polling still works for the same token.
    assert_eq!(server.poll(token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn cors_with_credentials_for_allowed_origins_only() {
    let server = Server::start(hub().cors_allowed_origins(["https://app.example"])).await;
    let preflight = server
        .send(
            Method::OPTIONS,
            "/negotiate?negotiateVersion=1",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "x-requested-with,x-signalr-user-agent,authorization",
                ),
            ],
            b"",
        )
        .await;
    // tower-http's CorsLayer answers the preflight (200, as it does for any application).
    assert_eq!(preflight.status(), StatusCode::OK);
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-allow-methods"], "GET,POST,DELETE");
    // The headers SignalR clients send, not whatever a request asks for.
    assert_eq!(
        headers["access-control-allow-headers"],
        "authorization,content-type,x-requested-with,x-signalr-user-agent"
    );
    assert_eq!(headers["access-control-max-age"], "600");

    let negotiate = server
        .send(
            Method::POST,
            "/negotiate?negotiateVersion=1",
            &[("Origin", "https://app.example")],
            b"",
        )
        .await;
    assert_eq!(
        negotiate.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        negotiate.headers()["access-control-allow-credentials"],
        "true"
    );

    let other = server
        .send(
            Method::POST,
            "/negotiate?negotiateVersion=1",
            &[("Origin", "https://evil.example")],
            b"",
        )
        .await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn an_application_cors_layer_guards_the_hub_as_it_guards_rest_routes() {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let policy = CorsLayer::new()
        .allow_origin(AllowOrigin::list(["https://shared.example"
            .parse()
            .unwrap()]))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([http::header::AUTHORIZATION, http::header::CONTENT_TYPE]);
    let server = Server::start(hub().cors(policy.clone())).await;
    let allowed = server
        .send(
            Method::POST,
            "/negotiate?negotiateVersion=1",
            &[("Origin", "https://shared.example")],
            b"",
        )
        .await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shared.example"
    );
    // The origin `cors_allowed_origins` would have listed is not in this policy.
    let refused = server
        .send(
            Method::POST,
            "/negotiate?negotiateVersion=1",
            &[("Origin", "https://app.example")],
            b"",
        )
        .await;
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn too_many_pending_negotiations_get_503() {
    let server = Server::start(hub().max_pending_negotiations(3)).await;
    for _ in 0..3 {
        server.negotiate().await;
    }
    let (status, _) = server
        .call(Method::POST, "/negotiate?negotiateVersion=1", &[], b"")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_sse_client_that_goes_away_is_noticed_at_once() {
    let disconnected = Arc::new(Mutex::new(Vec::new()));
    let record = disconnected.clone();
    let server = Server::start(hub().on_disconnected(
        move |_ctx: Context, error: Option<String>| {
            let record = record.clone();
            async move { record.lock().unwrap().push(error) }
        },
    ))
    .await;
    let token = server.negotiate().await;
    let mut body = server.open_sse(&token).await;
    assert_eq!(
        server.post(&token, &handshake("json")).await,
        StatusCode::OK
    );
    let _handshake = body.frame().await;
    assert_eq!(server.hub.connection_count(), 1);

    // The browser tab closes: the response is dropped, nothing is written to it.
    drop(body);
    let started = std::time::Instant::now();
    while server.hub.connection_count() != 0 {
        // Well before the 15 s keep-alive would have found out.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "SSE client still registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(disconnected.lock().unwrap().len(), 1);
    // The reference treats an aborted SSE request as the transport's normal end.
    assert_eq!(disconnected.lock().unwrap()[0], None);
}

/// A raw connection's text must be UTF-8, and WebSocket text frames are written without a
/// check of their own: a send that is not UTF-8 ends the connection, and neither it nor what
/// follows it reaches the client as a frame.
#[tokio::test]
async fn a_raw_connection_whose_text_is_not_utf8_is_ended_before_it_reaches_the_client() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};
    let handler = signalr_core::ConnectionHandler::new(|connection| async move {
        let _ = connection.send(Bytes::from_static(b"first")).await;
        let _ = connection
            .send(Bytes::from_static(b"\xff\xfe not text"))
            .await;
        let _ = connection.send(Bytes::from_static(b"after")).await;
        tokio::time::sleep(WAIT).await;
    });
    let app: axum::Router = axum::Router::new().nest_service("/raw", handler.service());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/raw"))
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, socket.next()).await.unwrap() {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "first"),
        other => panic!("expected the first text, got {other:?}"),
    }
    // The next thing the client sees is the end of the connection.
    match tokio::time::timeout(WAIT, socket.next()).await.unwrap() {
        None | Some(Ok(Message::Close(_))) => {}
        Some(Err(WsError::Utf8(_))) => panic!("the client received text that is not UTF-8"),
        Some(Err(_)) => {}
        Some(Ok(other)) => panic!("nothing more was to arrive, got {other:?}"),
    }
}
