//! The server over real loopback sockets: negotiate, the WebSocket transport, the handshake,
//! limits, hooks and shutdown, checked at the byte level with a raw client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signalr_core::{Clients, Hub, HubBuilder, HubContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const RS: char = '\u{1e}';
const WAIT: Duration = Duration::from_secs(5);

struct Server {
    port: u16,
    hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(builder: HubBuilder) -> Server {
        let hub = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = hub.clone();
        let done = tokio::spawn(async move {
            signalr_core::serve_with_shutdown(listener, "/hub", served, async {
                let _ = stopped.await;
            })
            .await
        });
        Server {
            port,
            hub,
            stop: Some(stop),
            done,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.done)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// A plain HTTP/1.1 request; returns (status, body).
    async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    async fn negotiate(&self, version: u32) -> Value {
        let (status, body) = self
            .http(
                "POST",
                &format!("/hub/negotiate?negotiateVersion={version}"),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn ws(&self, query: &str) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://127.0.0.1:{}/hub{query}", self.port);
        connect_async(url).await.map(|(socket, _)| socket)
    }

    /// A skip-negotiation JSON client with a small fixed receive buffer (no autotuning), for
    /// tests that stop reading: the backlog reaches the server quickly.
    async fn non_reading_client(&self) -> Socket {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(8 * 1024).unwrap();
        let stream = socket
            .connect(([127, 0, 0, 1], self.port).into())
            .await
            .unwrap();
        let url = format!("ws://127.0.0.1:{}/hub", self.port);
        let (mut socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        socket
            .send(Ws::text(format!(
                "{{\"protocol\":\"json\",\"version\":1}}{RS}"
            )))
            .await
            .unwrap();
        assert_eq!(next_text(&mut socket).await, format!("{{}}{RS}"));
        socket
    }

    /// Negotiates, opens the WebSocket and completes a JSON handshake.
    async fn json_client(&self) -> (Socket, String) {
        let negotiated = self.negotiate(1).await;
        let token = negotiated["connectionToken"].as_str().unwrap();
        let mut socket = self.ws(&format!("?id={token}")).await.unwrap();
        socket
            .send(Ws::text(format!(
                "{{\"protocol\":\"json\",\"version\":1}}{RS}"
            )))
            .await
            .unwrap();
        assert_eq!(next_text(&mut socket).await, format!("{{}}{RS}"));
        (
            socket,
            negotiated["connectionId"].as_str().unwrap().to_owned(),
        )
    }
}

/// The next text frame (pings included).
async fn next_text(socket: &mut Socket) -> String {
    loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Ws::Text(text))) => return text.to_string(),
            Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next hub message that is not a Ping, parsed.
async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let text = next_text(socket).await;
        for record in text.split(RS).filter(|r| !r.is_empty()) {
            let value: Value = serde_json::from_str(record).unwrap();
            if value["type"] != 6 {
                return value;
            }
        }
    }
}

async fn send(socket: &mut Socket, value: Value) {
    socket.send(Ws::text(format!("{value}{RS}"))).await.unwrap();
}

/// Waits for the server to close the socket, answering its close frame as real clients do;
/// returns the close code.
async fn closed(socket: &mut Socket) -> Option<u16> {
    let mut code = None;
    loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Ws::Close(frame))) => code = frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return code,
        }
    }
}

async fn echo(value: String) -> String {
    value
}

fn echo_hub() -> HubBuilder {
    Hub::builder().method("Echo", echo)
}

#[tokio::test]
async fn negotiate_answers_versions_like_the_reference() {
    let server = Server::start(echo_hub()).await;

    let v1 = server.negotiate(1).await;
    assert_eq!(v1["negotiateVersion"], 1);
    let id = v1["connectionId"].as_str().unwrap();
    let token = v1["connectionToken"].as_str().unwrap();
    assert_eq!(id.len(), 22);
    assert_ne!(id, token);
    for s in [id, token] {
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{s}"
        );
    }
    assert_eq!(
        v1["availableTransports"],
        json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ])
    );
    assert!(v1.get("useStatefulReconnect").is_none());
    assert!(v1.get("ProtocolVersion").is_none());

    // Version 0 has no token; newer versions are answered with our highest (1).
    let v0 = server.negotiate(0).await;
    assert_eq!(v0["negotiateVersion"], 0);
    assert!(v0.get("connectionToken").is_none());
    assert_eq!(server.negotiate(7).await["negotiateVersion"], 1);
    let (_, missing) = server.http("POST", "/hub/negotiate", &[]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&missing).unwrap()["negotiateVersion"],
        0
    );

    let (status, body) = server
        .http("POST", "/hub/negotiate?negotiateVersion=abc", &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "The client requested a non-integer protocol version."})
    );
    let (status, _) = server.http("GET", "/hub/negotiate", &[]).await;
    assert_eq!(status, 405);
    let (status, _) = server.http("PUT", "/hub", &[]).await;
    assert_eq!(status, 405);
    let (status, _) = server.http("GET", "/elsewhere", &[]).await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn transport_requests_get_the_reference_status_codes() {
    let server = Server::start(echo_hub()).await;

    // Unknown id: 404 before any upgrade.
    let err = server.ws("?id=unknown").await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    // A token can be used by one WebSocket at a time; the second gets 409.
    let negotiated = server.negotiate(1).await;
    let token = negotiated["connectionToken"].as_str().unwrap().to_owned();
    let mut first = server.ws(&format!("?id={token}")).await.unwrap();
    let err = server.ws(&format!("?id={token}")).await.unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");

    // POST and DELETE are for the other transports.
    let (status, _) = server.http("POST", &format!("/hub?id={token}"), &[]).await;
    assert_eq!(status, 405);
    let (status, _) = server
        .http("DELETE", &format!("/hub?id={token}"), &[])
        .await;
    assert_eq!(status, 400);
    let (status, body) = server.http("POST", "/hub", &[]).await;
    assert_eq!((status, body.as_str()), (400, "Connection ID required"));
    let (status, _) = server.http("POST", "/hub?id=nope", &[]).await;
    assert_eq!(status, 404);
    // Another transport cannot take over a WebSocket connection.
    let (status, body) = server
        .http(
            "GET",
            &format!("/hub?id={token}"),
            &[("Accept", "text/event-stream")],
        )
        .await;
    assert_eq!(
        (status, body.as_str()),
        (400, "Cannot change transports mid-connection")
    );
    let (status, _) = server.http("GET", &format!("/hub?id={token}"), &[]).await;
    assert_eq!(status, 400);

    // The connection id token is the one negotiated: the connection works.
    first
        .send(Ws::text(format!(
            "{{\"protocol\":\"json\",\"version\":1}}{RS}"
        )))
        .await
        .unwrap();
    assert_eq!(next_text(&mut first).await, format!("{{}}{RS}"));
    send(
        &mut first,
        json!({"type": 1, "invocationId": "1", "target": "echo", "arguments": ["hi"]}),
    )
    .await;
    assert_eq!(
        next_message(&mut first).await,
        json!({"type": 3, "invocationId": "1", "result": "hi"})
    );

    // After the connection ends, its token is gone.
    first.close(None).await.unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = server.ws(&format!("?id={token}")).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn handshake_refusals_carry_the_reference_messages() {
    let server =
        Server::start(echo_hub().protocols([signalr_core::protocol::Protocol::Json])).await;
    let cases = [
        (
            format!("{{\"protocol\":\"messagepack\",\"version\":1}}{RS}"),
            "The protocol 'messagepack' is not supported.",
        ),
        (
            format!("{{\"protocol\":\"xml\",\"version\":1}}{RS}"),
            "The protocol 'xml' is not supported.",
        ),
        (
            format!("{{\"protocol\":\"json\",\"version\":3}}{RS}"),
            "The server does not support version 3 of the 'json' protocol.",
        ),
        (
            format!("{{\"protocol\":\"json\"}}{RS}"),
            "An unexpected error occurred during connection handshake.",
        ),
    ];
    for (request, expected) in cases {
        let mut socket = server.ws("").await.unwrap();
        socket.send(Ws::text(request)).await.unwrap();
        let response: Value =
            serde_json::from_str(next_text(&mut socket).await.trim_end_matches(RS)).unwrap();
        assert_eq!(response, json!({"error": expected}));
        assert_eq!(closed(&mut socket).await, Some(1000));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn handshake_timeout_and_oversized_handshake_are_refused() {
    let server = Server::start(
        echo_hub()
            .handshake_timeout(Duration::from_millis(300))
            .max_receive_message_size(64),
    )
    .await;
    let mut silent = server.ws("").await.unwrap();
    let response = next_text(&mut silent).await;
    assert_eq!(
        response,
        format!("{{\"error\":\"Handshake was canceled.\"}}{RS}")
    );
    assert_eq!(closed(&mut silent).await, Some(1000));

    let mut huge = server.ws("").await.unwrap();
    huge.send(Ws::text("x".repeat(100))).await.unwrap();
    assert_eq!(
        next_text(&mut huge).await,
        format!("{{\"error\":\"Handshake was canceled.\"}}{RS}")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn records_split_and_batched_across_frames_are_all_handled() {
    let server = Server::start(echo_hub()).await;
    let mut socket = server.ws("").await.unwrap();
    // The handshake and two invocations in one frame; a third split over two frames.
    let batch = format!(
        "{{\"protocol\":\"json\",\"version\":1}}{RS}{}{RS}{}{RS}{{\"type\":1,\"invocationId\":\"3\",",
        json!({"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["a"]}),
        json!({"type": 1, "invocationId": "2", "target": "Echo", "arguments": ["b"]}),
    );
    socket.send(Ws::text(batch)).await.unwrap();
    socket
        .send(Ws::text(format!(
            "\"target\":\"Echo\",\"arguments\":[\"c\"]}}{RS}"
        )))
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await, format!("{{}}{RS}"));
    for (id, value) in [("1", "a"), ("2", "b"), ("3", "c")] {
        assert_eq!(
            next_message(&mut socket).await,
            json!({"type": 3, "invocationId": id, "result": value})
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_message_closes_with_an_error() {
    let server = Server::start(
        echo_hub()
            .max_receive_message_size(1024)
            .enable_detailed_errors(true),
    )
    .await;
    let (mut socket, _) = server.json_client().await;
    let big = "y".repeat(2000);
    send(
        &mut socket,
        json!({"type": 1, "invocationId": "1", "target": "Echo", "arguments": [big]}),
    )
    .await;
    let close = next_message(&mut socket).await;
    assert_eq!(close["type"], 7);
    assert_eq!(close["allowReconnect"], true);
    let error = close["error"].as_str().unwrap();
    assert!(
        error.starts_with("Connection closed with an error."),
        "{error}"
    );
    assert!(
        error.contains("The maximum message size of 1024B was exceeded."),
        "{error}"
    );
    assert_eq!(closed(&mut socket).await, Some(1000));
    server.shutdown().await;
}

async fn shout(clients: Clients, text: String) -> Result<(), signalr_core::Error> {
    clients.others().send("Shout", (text,)).await
}

#[tokio::test]
async fn hub_context_reaches_clients_from_outside() {
    let server = Server::start(echo_hub().method("Shout", shout)).await;
    let (mut a, a_id) = server.json_client().await;
    let (mut b, b_id) = server.json_client().await;

    let context: HubContext = server.hub.context();
    assert_eq!(context.connection_count(), 2);
    context
        .clients()
        .all()
        .send("Tick", (1, true, Option::<u8>::None))
        .await
        .unwrap();
    for socket in [&mut a, &mut b] {
        assert_eq!(
            next_message(socket).await,
            json!({"type": 1, "target": "Tick", "arguments": [1, true, null]})
        );
    }
    context
        .clients()
        .client(b_id.clone())
        .send("Only", ())
        .await
        .unwrap();
    context
        .clients()
        .all_except([b_id.clone()])
        .send("NotB", ())
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut b).await,
        json!({"type": 1, "target": "Only", "arguments": []})
    );
    assert_eq!(
        next_message(&mut a).await,
        json!({"type": 1, "target": "NotB", "arguments": []})
    );
    context
        .clients()
        .clients([a_id.clone(), "unknown".to_owned()])
        .send("Some", ("x",))
        .await
        .unwrap();
    assert_eq!(next_message(&mut a).await["target"], "Some");

    // Others excludes the caller.
    send(
        &mut a,
        json!({"type": 1, "invocationId": "9", "target": "Shout", "arguments": ["hey"]}),
    )
    .await;
    assert_eq!(
        next_message(&mut a).await,
        json!({"type": 3, "invocationId": "9", "result": null})
    );
    assert_eq!(
        next_message(&mut b).await,
        json!({"type": 1, "target": "Shout", "arguments": ["hey"]})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_to_reconnect_and_refuses_new_ones() {
    let server = Server::start(echo_hub()).await;
    let (mut socket, _) = server.json_client().await;
    let hub = server.hub.clone();
    let shutdown = tokio::spawn(async move { hub.shutdown().await });
    assert_eq!(
        next_message(&mut socket).await,
        json!({"type": 7, "allowReconnect": true})
    );
    assert_eq!(closed(&mut socket).await, Some(1000));
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    let (status, _) = server
        .http("POST", "/hub/negotiate?negotiateVersion=1", &[])
        .await;
    assert_eq!(status, 503);
    server.shutdown().await;
}

#[tokio::test]
async fn mounts_inside_an_axum_router() {
    let hub = echo_hub().build();
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .nest_service("/api/hubs/echo", hub.service());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let url = format!("ws://127.0.0.1:{port}/api/hubs/echo");
    let (mut socket, _) = connect_async(url).await.unwrap();
    socket
        .send(Ws::text(format!(
            "{{\"protocol\":\"json\",\"version\":1}}{RS}"
        )))
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await, format!("{{}}{RS}"));
    send(
        &mut socket,
        json!({"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["routed"]}),
    )
    .await;
    assert_eq!(next_message(&mut socket).await["result"], "routed");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_others_keep_receiving() {
    let server = Server::start(
        echo_hub()
            .outbound_queue_capacity(8)
            .send_timeout(Duration::from_millis(500)),
    )
    .await;
    let mut stuck = server.non_reading_client().await;
    let (mut healthy, _) = server.json_client().await;
    let context = server.hub.context();
    let chunk = "z".repeat(64 * 1024);

    // Far more than the socket buffers and the queue can hold for a client that never reads.
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while received < 300 {
            let message = next_message(&mut healthy).await;
            assert_eq!(message["target"], "Big");
            received += 1;
        }
        (received, healthy)
    });
    for _ in 0..300 {
        context
            .clients()
            .all()
            .send("Big", (&chunk,))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (received, _healthy) = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, 300);

    // The stuck client was closed: the server holds one connection now.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.hub.connection_count() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow client was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stuck.close(None));
    server.shutdown().await;
}

static PRODUCED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn produce() -> impl futures_util::Stream<Item = String> {
    futures_util::stream::iter(0..100_000).map(|_| {
        PRODUCED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        "p".repeat(16 * 1024)
    })
}

#[tokio::test]
async fn a_slow_stream_reader_slows_the_producer_instead_of_growing_memory() {
    let server = Server::start(
        echo_hub()
            .method("Produce", produce)
            .outbound_queue_capacity(16)
            .send_timeout(Duration::from_secs(30)),
    )
    .await;
    let mut slow = server.non_reading_client().await;
    send(
        &mut slow,
        json!({"type": 4, "invocationId": "1", "target": "Produce", "arguments": []}),
    )
    .await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let produced = PRODUCED.load(std::sync::atomic::Ordering::SeqCst);
    // Queue (16) plus what the kernel buffers (a few MB of 16 KiB items): far below 100,000.
    assert!(
        produced < 1_000,
        "the producer ran ahead of the client: {produced} items"
    );
    let later = {
        tokio::time::sleep(Duration::from_millis(500)).await;
        PRODUCED.load(std::sync::atomic::Ordering::SeqCst)
    };
    assert!(
        later - produced < 50,
        "the producer kept going: {produced} -> {later}"
    );
    drop(slow);
}

#[tokio::test]
async fn hostile_frames_get_a_close_and_the_server_keeps_serving_others() {
    let server = Server::start(
        echo_hub()
            .max_receive_message_size(4096)
            .client_timeout(Duration::from_millis(1000))
            .keep_alive_interval(Duration::from_millis(300)),
    )
    .await;
    let (mut good, _) = server.json_client().await;
    // A well-behaved client talks throughout (pings every 200 ms), then echoes at the end.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let good_client = tokio::spawn(async move {
        loop {
            send(&mut good, json!({"type": 6})).await;
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        send(
            &mut good,
            json!({"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["still here"]}),
        )
        .await;
        next_message(&mut good).await["result"].clone()
    });
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..60 {
        let protocol = if round % 2 == 0 {
            "json"
        } else {
            "messagepack"
        };
        let mut socket = server.ws("").await.unwrap();
        socket
            .send(Ws::text(format!(
                "{{\"protocol\":\"{protocol}\",\"version\":1}}{RS}"
            )))
            .await
            .unwrap();
        let _handshake = next_text_or_binary(&mut socket).await;
        // Random bytes, sometimes with a plausible start, in text or binary frames.
        let len = (next() % 600) as usize + 1;
        let mut garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 3 == 0 {
            garbage.splice(0..0, b"{\"type\":1,\"target\":".iter().copied());
        }
        garbage.push(0x1e);
        let frame = match String::from_utf8(garbage.clone()) {
            Ok(text) if round % 2 == 0 => Ws::text(text),
            _ => Ws::binary(garbage),
        };
        let _ = socket.send(frame).await;
        // The server answers with a Close, at once or (for half a record and silence) at the
        // client timeout; it never holds the connection forever.
        let ended = tokio::time::timeout(WAIT, async {
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Ws::Close(_)) {
                    break;
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "round {round}: the server did not close a hostile connection"
        );
    }
    // The well-behaved client was never disturbed.
    let _ = stop.send(());
    assert_eq!(good_client.await.unwrap(), "still here");
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.hub.connection_count() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "hostile connections were not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_text_or_binary(socket: &mut Socket) -> Vec<u8> {
    loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Ws::Text(text))) => return text.as_bytes().to_vec(),
            Some(Ok(Ws::Binary(data))) => return data.to_vec(),
            Some(Ok(_)) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_protocol_violations_end_with_a_close_that_says_why() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    let server = Server::start(echo_hub().enable_detailed_errors(true)).await;

    // Invalid UTF-8 in a text frame: the SignalR Close carries the reason, the close frame
    // names the violation (1007).
    let (mut socket, _) = server.json_client().await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x1e], OpCode::Data(Data::Text), true);
    socket.send(Ws::Frame(frame)).await.unwrap();
    let close = next_text(&mut socket).await;
    assert!(
        close.starts_with("{\"type\":7,\"error\":\"Connection closed with an error."),
        "{close}"
    );
    assert!(close.contains("WebSocketException"), "{close}");
    match tokio::time::timeout(WAIT, socket.next()).await.unwrap() {
        Some(Ok(Ws::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Invalid),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // An unmasked client frame (only a raw socket can send one): close code 1002.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let upgrade = "GET /hub HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(upgrade.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        response.push(byte[0]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"));
    // The handshake masked, as the protocol requires; then a ping record unmasked.
    let handshake = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    let key = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81, 0x80 | handshake.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(handshake.bytes().enumerate().map(|(i, b)| b ^ key[i % 4]));
    stream.write_all(&frame).await.unwrap();
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"\x81\x03{}\x1e");
    let ping = format!("{{\"type\":6}}{RS}");
    let mut frame = vec![0x81, ping.len() as u8];
    frame.extend_from_slice(ping.as_bytes());
    stream.write_all(&frame).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("Connection closed with an error."), "{text}");
    // The close frame: FIN + opcode 8, then the status code 1002 (0x03EA).
    let close_at = received
        .iter()
        .rposition(|&b| b == 0x88)
        .expect("a close frame");
    assert_eq!(&received[close_at + 2..close_at + 4], &[0x03, 0xEA]);
}
