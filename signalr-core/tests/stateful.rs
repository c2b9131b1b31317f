//! Stateful reconnect at the wire level: negotiate, re-attaching with the same token, Sequence
//! and replay, duplicates dropped, the grace period.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signalr_core::{Hub, HubBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
const RS: char = '\u{1e}';
const WAIT: Duration = Duration::from_secs(5);

async fn echo(value: String) -> String {
    value
}

async fn start(builder: HubBuilder) -> (u16, Hub) {
    let hub = builder.method("Echo", echo).build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = hub.clone();
    tokio::spawn(async move {
        signalr_core::serve_with_shutdown(listener, "/hub", served, std::future::pending()).await
    });
    (port, hub)
}

async fn negotiate(port: u16, query: &str) -> Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("POST /hub/negotiate?negotiateVersion=1{query} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// Negotiates a connection that asks for stateful reconnect; returns its token.
async fn stateful_token(port: u16) -> String {
    negotiate(port, "&useStatefulReconnect=true").await["connectionToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn open(port: u16, token: &str) -> Result<Socket, String> {
    connect_async(format!("ws://127.0.0.1:{port}/hub?id={token}"))
        .await
        .map(|(socket, _)| socket)
        .map_err(|e| e.to_string())
}

async fn next(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Ws::Text(text))) => {
                let value: Value =
                    serde_json::from_str(text.as_str().trim_end_matches(RS)).unwrap();
                if value["type"] != 6 {
                    return value;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn send(socket: &mut Socket, value: Value) {
    socket.send(Ws::text(format!("{value}{RS}"))).await.unwrap();
}

fn echo_call(id: &str, value: &str) -> Value {
    json!({"type": 1, "invocationId": id, "target": "Echo", "arguments": [value]})
}

#[tokio::test]
async fn negotiate_grants_stateful_reconnect_only_when_both_sides_want_it() {
    let (allowed, _) = start(Hub::builder().allow_stateful_reconnect(true)).await;
    let (refused, _) = start(Hub::builder()).await;
    assert_eq!(
        negotiate(allowed, "&useStatefulReconnect=true").await["useStatefulReconnect"],
        true
    );
    assert!(negotiate(allowed, "")
        .await
        .get("useStatefulReconnect")
        .is_none());
    assert!(negotiate(refused, "&useStatefulReconnect=true")
        .await
        .get("useStatefulReconnect")
        .is_none());
}

#[tokio::test]
async fn a_reattached_socket_gets_a_sequence_then_the_replay_and_duplicates_are_dropped() {
    let (port, hub) = start(Hub::builder().allow_stateful_reconnect(true)).await;
    let token = stateful_token(port).await;
    let mut first = open(port, &token).await.unwrap();
    send(&mut first, json!({"protocol": "json", "version": 2})).await;
    assert_eq!(next(&mut first).await, json!({}));
    send(&mut first, echo_call("1", "a")).await;
    assert_eq!(
        next(&mut first).await,
        json!({"type": 3, "invocationId": "1", "result": "a"})
    );
    // The server acknowledges what it processed (about once a second).
    assert_eq!(next(&mut first).await, json!({"type": 8, "sequenceId": 1}));

    // The socket dies without a close handshake.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hub.connection_count(),
        1,
        "the connection waits for the client"
    );

    let mut second = open(port, &token).await.unwrap();
    // No new handshake: the server's Sequence comes first, then everything not acknowledged.
    assert_eq!(next(&mut second).await, json!({"type": 9, "sequenceId": 1}));
    assert_eq!(
        next(&mut second).await,
        json!({"type": 3, "invocationId": "1", "result": "a"})
    );
    // The client resends from its oldest unacknowledged message: a duplicate, dropped...
    send(&mut second, json!({"type": 9, "sequenceId": 1})).await;
    send(&mut second, echo_call("1", "a")).await;
    // ...while a new one is processed.
    send(&mut second, echo_call("2", "b")).await;
    assert_eq!(
        next(&mut second).await,
        json!({"type": 3, "invocationId": "2", "result": "b"})
    );
    send(&mut second, json!({"type": 8, "sequenceId": 2})).await;

    // A socket that still looks open is replaced too.
    let mut third = open(port, &token).await.unwrap();
    assert_eq!(next(&mut third).await, json!({"type": 9, "sequenceId": 3}));
    send(&mut third, json!({"type": 9, "sequenceId": 3})).await;
    send(&mut third, echo_call("3", "c")).await;
    assert_eq!(
        next(&mut third).await,
        json!({"type": 3, "invocationId": "3", "result": "c"})
    );

    // A Sequence that skips ahead of what the server processed is a protocol error.
    send(&mut third, json!({"type": 9, "sequenceId": 99})).await;
    let close = next(&mut third).await;
    assert_eq!(close["type"], 7);
    assert_eq!(close["error"], "Connection closed with an error.");
}

#[tokio::test]
async fn the_grace_period_ends_the_connection_and_version_1_turns_it_off() {
    let (port, hub) = start(
        Hub::builder()
            .allow_stateful_reconnect(true)
            .disconnect_timeout(Duration::from_millis(300)),
    )
    .await;
    let token = stateful_token(port).await;
    let mut socket = open(port, &token).await.unwrap();
    send(&mut socket, json!({"protocol": "json", "version": 2})).await;
    assert_eq!(next(&mut socket).await, json!({}));
    drop(socket);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(hub.connection_count(), 0);
    assert!(open(port, &token).await.unwrap_err().contains("404"));

    // A version 1 handshake on a negotiated stateful connection turns the feature off.
    let token = stateful_token(port).await;
    let mut socket = open(port, &token).await.unwrap();
    send(&mut socket, json!({"protocol": "json", "version": 1})).await;
    assert_eq!(next(&mut socket).await, json!({}));
    assert!(open(port, &token).await.unwrap_err().contains("409"));
    drop(socket);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        hub.connection_count(),
        0,
        "without stateful reconnect a drop ends it at once"
    );
}

#[tokio::test]
async fn past_the_buffer_limit_sends_wait_for_acks() {
    let (port, hub) = start(
        Hub::builder()
            .allow_stateful_reconnect(true)
            .stateful_reconnect_buffer_size(150),
    )
    .await;
    let token = stateful_token(port).await;
    let mut socket = open(port, &token).await.unwrap();
    send(&mut socket, json!({"protocol": "json", "version": 2})).await;
    assert_eq!(next(&mut socket).await, json!({}));

    // Ten messages of about 60 bytes each; the client acknowledges none yet.
    let context = hub.context();
    for n in 1..=10 {
        context
            .clients()
            .all()
            .send("M", (n, "x".repeat(20)))
            .await
            .unwrap();
    }
    let mut received = Vec::new();
    while let Ok(message) =
        tokio::time::timeout(Duration::from_millis(300), next(&mut socket)).await
    {
        received.push(message["arguments"][0].as_u64().unwrap());
    }
    assert!(
        !received.is_empty() && received.len() < 10,
        "the buffer holds back the rest: got {received:?}"
    );
    // Acknowledging makes room; the rest follows, in order.
    while received.len() < 10 {
        send(
            &mut socket,
            json!({"type": 8, "sequenceId": received.len()}),
        )
        .await;
        received.push(next(&mut socket).await["arguments"][0].as_u64().unwrap());
    }
    assert_eq!(received, (1..=10).collect::<Vec<_>>());
}
