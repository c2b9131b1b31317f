//! Every rule about time, through the public interface, in virtual time: the test kit's
//! in-memory transport under tokio's paused clock (so an hour takes milliseconds), and the
//! long-polling HTTP endpoints called in process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use signalr_core::protocol::{Close, Message, NoValue, Protocol};
use signalr_core::test_util::{ServerMessage, TestClient};
use signalr_core::{Context, Hub, HubBuilder, TransportKind};
use tokio::time::Instant;
use tower::ServiceExt;

const SECOND: Duration = Duration::from_secs(1);
const PING: Message<NoValue, NoValue> = Message::Ping;

async fn echo(text: String) -> String {
    text
}

fn hub() -> HubBuilder {
    Hub::builder().method("Echo", echo)
}

/// Every transport with every protocol it can carry.
fn pairs() -> Vec<(TransportKind, Protocol)> {
    let mut pairs = Vec::new();
    for transport in TransportKind::ALL {
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            if transport != TransportKind::ServerSentEvents || protocol == Protocol::Json {
                pairs.push((transport, protocol));
            }
        }
    }
    pairs
}

async fn connect(hub: &Hub, transport: TransportKind, protocol: Protocol) -> TestClient {
    TestClient::builder()
        .transport(transport)
        .protocol(protocol)
        .connect(hub)
        .await
        .unwrap()
}

/// Waits for the next server message, at most `limit`; `None` on timeout.
async fn next_within(client: &mut TestClient, limit: Duration) -> Option<Option<ServerMessage>> {
    tokio::time::timeout(limit, client.recv()).await.ok()
}

#[tokio::test(start_paused = true)]
async fn idle_for_an_hour_on_every_transport_and_protocol_without_a_drop() {
    for (transport, protocol) in pairs() {
        let hub = hub().build();
        let mut client = connect(&hub, transport, protocol).await;
        // Like the official client: it pings every 15 s, except on long polling.
        let client_pings = transport != TransportKind::LongPolling;
        let start = Instant::now();
        let mut last_server_message = start;
        let mut longest_gap = Duration::ZERO;
        let mut server_pings = 0;
        let mut next_ping = start + 15 * SECOND;
        while start.elapsed() < 3600 * SECOND {
            let wait = next_ping.saturating_duration_since(Instant::now());
            match next_within(&mut client, wait).await {
                Some(Some(Message::Ping)) => {
                    longest_gap = longest_gap.max(last_server_message.elapsed());
                    last_server_message = Instant::now();
                    server_pings += 1;
                }
                Some(other) => panic!("{transport:?}/{protocol}: unexpected {other:?}"),
                None => {
                    if client_pings {
                        client.send_message(&PING).await;
                    }
                    next_ping += 15 * SECOND;
                }
            }
        }
        let label = format!("{transport:?}/{protocol}");
        if transport == TransportKind::LongPolling {
            assert_eq!(server_pings, 0, "{label}: long polling has no pings");
        } else {
            assert!(
                server_pings >= 239,
                "{label}: {server_pings} pings in an hour"
            );
            assert!(longest_gap <= 15 * SECOND, "{label}: {longest_gap:?} gap");
        }
        let echoed: String = client.invoke("Echo", ("still here",)).await.unwrap();
        assert_eq!(echoed, "still here", "{label}");
        assert_eq!(hub.connection_count(), 1, "{label}");
    }
}

#[tokio::test(start_paused = true)]
async fn keep_alive_counts_from_the_last_write() {
    let hub = hub().build();
    let mut client = connect(&hub, TransportKind::WebSockets, Protocol::Json).await;
    let start = Instant::now();
    tokio::time::sleep(10 * SECOND).await;
    // The Completion written at 10 s moves the next Ping to 25 s.
    let _: String = client.invoke("Echo", ("x",)).await.unwrap();
    assert!(matches!(client.recv().await, Some(Message::Ping)));
    assert_eq!(start.elapsed(), 25 * SECOND);
    // The client's own Ping keeps its side alive; the server's next comes 15 s after its last.
    client.send_message(&PING).await;
    assert!(matches!(client.recv().await, Some(Message::Ping)));
    assert_eq!(start.elapsed(), 40 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_times_out_after_the_client_timeout_on_websockets_and_sse() {
    for transport in [TransportKind::WebSockets, TransportKind::ServerSentEvents] {
        let hub = hub().enable_detailed_errors(true).build();
        let mut client = connect(&hub, transport, Protocol::Json).await;
        let start = Instant::now();
        let close = client.closed().await.expect("a Close message");
        assert_eq!(start.elapsed(), 30 * SECOND, "{transport:?}");
        let error = close.error.unwrap();
        assert!(error.contains("ClientTimeoutInterval"), "{error}");
        assert!(close.allow_reconnect);
    }
}

#[tokio::test(start_paused = true)]
async fn the_client_timeout_ends_a_dripping_connection_at_thirty_seconds() {
    let disconnected_at = Arc::new(Mutex::new(None));
    let seen = disconnected_at.clone();
    let start = Instant::now();
    let hub = hub()
        .on_disconnected(move |_: Context, _error: Option<String>| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() = Some(start.elapsed());
            }
        })
        .build();
    let mut client = connect(&hub, TransportKind::WebSockets, Protocol::Json).await;
    // One byte every 5 s of a record that never completes.
    for _ in 0..10 {
        tokio::time::sleep(5 * SECOND).await;
        client.send_bytes(&b"{"[..]).await;
    }
    assert_eq!(*disconnected_at.lock().unwrap(), Some(30 * SECOND));
    let close = client.closed().await.expect("a Close message");
    assert_eq!(
        close.error.as_deref(),
        Some("Connection closed with an error.")
    );
}

#[tokio::test(start_paused = true)]
async fn long_polling_is_not_timed_out_by_missing_pings() {
    let hub = hub().build();
    let mut client = connect(&hub, TransportKind::LongPolling, Protocol::MessagePack).await;
    assert!(next_within(&mut client, 3600 * SECOND).await.is_none());
    let echoed: String = client.invoke("Echo", ("awake",)).await.unwrap();
    assert_eq!(echoed, "awake");
}

#[tokio::test(start_paused = true)]
async fn stateful_sequence_zero_is_a_clear_close_not_a_silent_drop() {
    let hub = hub().enable_detailed_errors(true).build();
    let mut client = TestClient::builder()
        .stateful(true)
        .connect(&hub)
        .await
        .unwrap();
    client
        .send_bytes(&b"{\"type\":9,\"sequenceId\":0}\x1e{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"x\"]}\x1e"[..])
        .await;
    let close = client.closed().await.expect("a Close message");
    let error = close.error.unwrap();
    assert!(error.contains("Sequence ID 0 is invalid"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn stateful_connections_acknowledge_within_a_second_and_survive_an_idle_hour() {
    let hub = hub().build();
    let mut client = TestClient::builder()
        .stateful(true)
        .connect(&hub)
        .await
        .unwrap();
    let start = Instant::now();
    let echoed: String = client.invoke("Echo", ("x",)).await.unwrap();
    assert_eq!(echoed, "x");
    match client.recv().await {
        Some(Message::Ack(1)) => assert_eq!(start.elapsed(), SECOND),
        other => panic!("expected Ack(1), got {other:?}"),
    }
    let mut next_ping = Instant::now() + 15 * SECOND;
    while start.elapsed() < 3600 * SECOND {
        let wait = next_ping.saturating_duration_since(Instant::now());
        match next_within(&mut client, wait).await {
            Some(Some(Message::Ping)) => {}
            Some(other) => panic!("unexpected {other:?}"),
            None => {
                client.send_message(&PING).await;
                next_ping += 15 * SECOND;
            }
        }
    }
    let echoed: String = client.invoke("Echo", ("y",)).await.unwrap();
    assert_eq!(echoed, "y");
}

#[tokio::test(start_paused = true)]
async fn a_client_close_ends_the_connection_gracefully() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let hub = hub()
        .on_disconnected(move |_: Context, error: Option<String>| {
            let seen = seen.clone();
            async move { seen.lock().unwrap().push(error) }
        })
        .build();
    let mut client = connect(&hub, TransportKind::WebSockets, Protocol::Json).await;
    client
        .send_message(&Message::<NoValue, NoValue>::Close(Close::default()))
        .await;
    assert_eq!(client.closed().await, Some(Close::default()));
    tokio::task::yield_now().await;
    assert_eq!(*errors.lock().unwrap(), vec![None]);
}

// --- Long polling over HTTP, in process ---

async fn call(hub: &Hub, method: &str, uri: &str, body: &'static [u8]) -> (u16, Bytes) {
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let response = hub.service().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// Negotiates and starts a JSON long-polling connection; returns its token.
async fn long_polling_connection(hub: &Hub) -> String {
    let (status, body) = call(hub, "POST", "/negotiate?negotiateVersion=1", b"").await;
    assert_eq!(status, 200);
    let negotiated: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let token = negotiated["connectionToken"].as_str().unwrap().to_owned();
    let (status, _) = call(hub, "GET", &format!("/?id={token}"), b"").await;
    assert_eq!(status, 200);
    let handshake = b"{\"protocol\":\"json\",\"version\":1}\x1e";
    assert_eq!(
        call(hub, "POST", &format!("/?id={token}"), handshake)
            .await
            .0,
        200
    );
    let (status, body) = call(hub, "GET", &format!("/?id={token}"), b"").await;
    assert_eq!((status, &body[..]), (200, &b"{}\x1e"[..]));
    token
}

fn recording_hub() -> (Hub, Arc<Mutex<Option<Duration>>>, Instant) {
    let ended = Arc::new(Mutex::new(None));
    let seen = ended.clone();
    let start = Instant::now();
    let hub = hub()
        .on_disconnected(move |_: Context, _: Option<String>| {
            let seen = seen.clone();
            async move { *seen.lock().unwrap() = Some(start.elapsed()) }
        })
        .build();
    (hub, ended, start)
}

#[tokio::test(start_paused = true)]
async fn a_long_polling_client_that_stops_polling_is_let_go_after_the_disconnect_timeout() {
    let (hub, ended, start) = recording_hub();
    let _token = long_polling_connection(&hub).await;
    let stopped = start.elapsed();
    tokio::time::sleep(14 * SECOND).await;
    assert_eq!(
        *ended.lock().unwrap(),
        None,
        "still within the disconnect timeout"
    );
    tokio::time::sleep(2 * SECOND).await;
    let at = ended.lock().unwrap().expect("disconnected");
    assert_eq!(at - stopped, 15 * SECOND);
    assert_eq!(hub.connection_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_long_polling_client_that_keeps_polling_stays_for_an_hour() {
    let (hub, ended, start) = recording_hub();
    let token = long_polling_connection(&hub).await;
    let poll = format!("/?id={token}");
    // Each poll waits the 90 s poll timeout and answers empty; the client polls again at once.
    while start.elapsed() < 3600 * SECOND {
        let (status, body) = call(&hub, "GET", &poll, b"").await;
        assert_eq!((status, body.len()), (200, 0));
    }
    assert_eq!(*ended.lock().unwrap(), None);
    let invocation =
        b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"hi\"]}\x1e";
    assert_eq!(call(&hub, "POST", &poll, invocation).await.0, 200);
    let (_, body) = call(&hub, "GET", &poll, b"").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.contains("\"result\":\"hi\""), "{text}");
}
