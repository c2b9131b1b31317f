//! Stateful reconnect: a client whose WebSocket drops keeps its connection (id, groups,
//! running streams) and misses nothing: the server keeps what it sent until the client
//! acknowledges it, and replays the rest when the client re-attaches with the same token.
//!
//! ```text
//! cargo run --example stateful_reconnect   # http://127.0.0.1:5000/hubs/ticks (PORT to change)
//! ```
//! The client must ask for it: `withStatefulReconnect()` in the JS client (8.0 and later), over
//! WebSockets. Without it, a dropped socket ends the connection as usual.
//! ```js
//! const c = new signalR.HubConnectionBuilder()
//!   .withUrl("http://127.0.0.1:5000/hubs/ticks", { transport: signalR.HttpTransportType.WebSockets })
//!   .withStatefulReconnect({ bufferSize: 100_000 })    // what the client keeps for replay
//!   .withAutomaticReconnect()          // for when the grace period passes and the connection ends
//!   .build();
//! c.onreconnecting(() => console.log("socket lost, re-attaching"));
//! await c.start();
//! let last = -1;
//! c.stream("Ticks", 200).subscribe({ error: console.error, complete() {},
//!   next: (n) => { if (n !== last + 1) console.log("gap!"); last = n; console.log(n); } });
//! ```
//! Cut the socket (DevTools offline for a few seconds, or `ss -K dport = 5000` as root): the
//! ticks stop, then resume from where they were, with no gap and no repeat.

use std::time::Duration;

use futures_util::Stream;
use signalr_core::{Context, Hub, HubError};

const HUB_PATH: &str = "/hubs/ticks";
/// How long a dropped client's connection waits for it (the disconnect timeout).
const GRACE: Duration = Duration::from_secs(30);

/// Numbers 0, 1, 2, ... one per interval, until the client cancels or the connection ends.
/// A socket drop is neither: the stream keeps running and its items wait for the replay.
async fn ticks(interval_ms: u64) -> Result<impl Stream<Item = Result<u64, HubError>>, HubError> {
    if !(10..=10_000).contains(&interval_ms) {
        return Err(HubError::new("The interval is 10 to 10,000 ms."));
    }
    let interval = Duration::from_millis(interval_ms);
    Ok(futures_util::stream::unfold(0u64, move |n| async move {
        if n > 0 {
            tokio::time::sleep(interval).await;
        }
        Some((Ok(n), n + 1))
    }))
}

fn hub() -> Hub {
    Hub::builder()
        .allow_stateful_reconnect(true)
        // Bytes of unacknowledged messages kept per client; past it, sends to that client
        // wait for its acknowledgements instead of growing memory.
        .stateful_reconnect_buffer_size(64 * 1024)
        .disconnect_timeout(GRACE)
        .method("Ticks", ticks)
        // Both hooks run once per logical connection, however many sockets it goes through.
        .on_connected(|ctx: Context| async move {
            tracing::info!(connection = ctx.connection_id(), "connected");
        })
        .on_disconnected(|ctx: Context, error: Option<String>| async move {
            tracing::info!(connection = ctx.connection_id(), ?error, "disconnected");
        })
        .build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_examples::serve_example("stateful reconnect", HUB_PATH, hub()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message as Ws;

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;
    const RS: char = '\u{1e}';

    async fn send(socket: &mut Socket, message: Value) {
        socket
            .send(Ws::text(format!("{message}{RS}")))
            .await
            .unwrap();
    }

    /// The next hub message, skipping Pings and the server's Acks.
    async fn next(socket: &mut Socket) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
            if let Some(Ok(Ws::Text(text))) = frame.expect("a message in time") {
                let message: Value = serde_json::from_str(text.trim_end_matches(RS)).unwrap();
                if message["type"] != 6 && message["type"] != 8 {
                    return message;
                }
            }
        }
    }

    #[tokio::test]
    async fn ticks_survive_a_dropped_socket_with_no_gap_and_no_repeat() {
        let hub = hub();
        let addr = signalr_examples::serve_on_free_port(HUB_PATH, hub.clone()).await;
        // Negotiate grants it only to a client that asks.
        let (_, plain) = signalr_examples::negotiate(addr, HUB_PATH, "", &[])
            .await
            .unwrap();
        assert!(!plain.contains("useStatefulReconnect"), "{plain}");
        let (status, body) =
            signalr_examples::negotiate(addr, HUB_PATH, "&useStatefulReconnect=true", &[])
                .await
                .unwrap();
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["useStatefulReconnect"], true);
        let url = format!(
            "ws://{addr}{HUB_PATH}?id={}",
            body["connectionToken"].as_str().unwrap()
        );

        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        send(&mut socket, json!({"protocol": "json", "version": 2})).await;
        assert_eq!(next(&mut socket).await, json!({}));
        let call = json!({"type": 4, "invocationId": "1", "target": "Ticks", "arguments": [50]});
        send(&mut socket, call.clone()).await;
        for n in 0..3 {
            assert_eq!(next(&mut socket).await["item"], n);
        }
        // Acknowledge the three items (server messages 1 to 3), then lose the socket.
        send(&mut socket, json!({"type": 8, "sequenceId": 3})).await;
        // Time for the Ack to be read, so that the replay starts after it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(socket);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            hub.connection_count(),
            1,
            "the connection waits for its client"
        );

        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        // No handshake: the server says where its replay starts, the client where its does
        // (and resends its unacknowledged call, which the server drops as a duplicate).
        assert_eq!(next(&mut socket).await, json!({"type": 9, "sequenceId": 4}));
        send(&mut socket, json!({"type": 9, "sequenceId": 1})).await;
        send(&mut socket, call).await;
        for n in 3..12 {
            let item = next(&mut socket).await;
            assert_eq!(
                (item["type"].clone(), item["item"].clone()),
                (json!(2), json!(n))
            );
        }
    }

    #[tokio::test]
    async fn the_interval_is_bounded() {
        let hub = hub();
        let mut client = signalr_core::test_util::TestClient::connect(&hub)
            .await
            .unwrap();
        let refused = client.stream::<u64>("Ticks", (0,)).await.unwrap_err();
        assert!(
            refused.ends_with("The interval is 10 to 10,000 ms."),
            "{refused}"
        );
    }
}
