//! A build without the `msgpack` feature, over a real socket: MessagePack is refused at the
//! handshake with the reference's text for an unregistered protocol, and JSON works as usual.
//!
//! Compiled only without `msgpack` (the default build has it), so CI runs it on its own:
//! `cargo test -p signalr-core --no-default-features --features server --test without_msgpack`.
#![cfg(all(not(feature = "msgpack"), feature = "server"))]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signalr_core::protocol::Protocol;
use signalr_core::Hub;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(5);

async fn echo(text: String) -> String {
    text
}

/// Serves an `Echo` hub at `/hub` on a fresh port until the test ends.
async fn start() -> u16 {
    let hub = Hub::builder().method("Echo", echo).build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(signalr_core::serve_with_shutdown(
        listener,
        "/hub",
        hub,
        std::future::pending(),
    ));
    port
}

/// Opens a WebSocket without negotiating (as `skipNegotiation` clients do) and sends a
/// handshake request for `protocol`; returns the socket and the handshake response text.
async fn handshake(port: u16, protocol: &str) -> (Socket, String) {
    let (mut socket, _) = connect_async(format!("ws://127.0.0.1:{port}/hub"))
        .await
        .unwrap();
    let request = json!({ "protocol": protocol, "version": 1 });
    socket
        .send(Ws::text(format!("{request}\u{1e}")))
        .await
        .unwrap();
    let response = next_text(&mut socket).await.expect("a handshake response");
    (socket, response)
}

async fn next_text(socket: &mut Socket) -> Option<String> {
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await.unwrap() {
            Some(Ok(Ws::Text(text))) => return Some(text.to_string()),
            Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

#[test]
fn only_json_is_known() {
    assert_eq!(Protocol::ALL, [Protocol::Json]);
    assert_eq!(Protocol::from_name("messagepack"), None);
    assert_eq!(Protocol::from_name("json"), Some(Protocol::Json));
}

#[tokio::test]
async fn a_messagepack_handshake_is_refused_and_the_transport_closed() {
    let port = start().await;
    let (mut socket, response) = handshake(port, "messagepack").await;
    assert_eq!(
        response,
        "{\"error\":\"The protocol 'messagepack' is not supported.\"}\u{1e}"
    );
    assert_eq!(next_text(&mut socket).await, None, "the transport closes");
}

#[tokio::test]
async fn json_clients_are_served_as_usual() {
    let port = start().await;
    let (mut socket, response) = handshake(port, "json").await;
    assert_eq!(response, "{}\u{1e}");
    let invocation =
        json!({ "type": 1, "invocationId": "1", "target": "Echo", "arguments": ["hi"] });
    socket
        .send(Ws::text(format!("{invocation}\u{1e}")))
        .await
        .unwrap();
    let record = next_text(&mut socket).await.expect("a completion");
    let completion: Value = serde_json::from_str(record.trim_end_matches('\u{1e}')).unwrap();
    assert_eq!(
        completion,
        json!({ "type": 3, "invocationId": "1", "result": "hi" })
    );
}
