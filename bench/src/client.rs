//! The client side of every target, so that each pays the same generator cost: WebSocket
//! connections speaking SignalR (JSON or MessagePack), the raw baseline's bare frames, a minimal
//! Socket.IO (Engine.IO v4 over WebSocket) adapter, and a SignalR long-polling client.
//!
//! Every payload the generator sends carries a timestamp marker: `@` followed by 16 decimal
//! digits, the microseconds since the generator started. Replies, broadcasts and group messages
//! carry the marker back unchanged in every protocol (JSON strings, MessagePack str bytes,
//! Socket.IO JSON), so latency is read from the bytes without decoding them.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use signalr_core::protocol::{Headers, Invocation, Message, NoValue, Protocol, TransferFormat};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Payload length in bytes, marker included.
const PAYLOAD_LEN: usize = 32;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds from the generator's epoch to `at`.
pub fn micros(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_micros() as u64
}

/// A payload carrying `at` as its timestamp marker.
pub fn payload(at: Instant) -> String {
    let mut text = format!("@{:016}", micros(at));
    while text.len() < PAYLOAD_LEN {
        text.push('x');
    }
    text
}

/// Every timestamp marker in a frame (a frame may carry several records).
pub fn markers(data: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(offset) = data[from..].iter().position(|&b| b == b'@') {
            let at = from + offset;
            from = at + 1;
            let digits = data.get(at + 1..at + 17)?;
            if digits.iter().all(u8::is_ascii_digit) {
                from = at + 17;
                return Some(
                    digits
                        .iter()
                        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
                );
            }
        }
        None
    })
}

/// The bytes of a data frame, if it is one.
pub fn frame_bytes(frame: &Ws) -> Option<&[u8]> {
    match frame {
        Ws::Text(text) => Some(text.as_bytes()),
        Ws::Binary(data) => Some(data),
        _ => None,
    }
}

/// How a target is spoken to.
#[derive(Clone, Copy, Debug)]
pub enum Wire {
    /// A SignalR hub (ours, aiosignalr) with this hub protocol.
    SignalR(Protocol),
    /// The raw baseline: bare frames, the same bytes a SignalR client would send.
    Raw(Protocol),
    /// A Socket.IO server: Engine.IO v4 packets over WebSocket.
    SocketIo,
}

impl Wire {
    pub fn of(target: &str, protocol: Protocol) -> Wire {
        match target {
            "raw" => Wire::Raw(protocol),
            "socket.io" => Wire::SocketIo,
            _ => Wire::SignalR(protocol),
        }
    }

    /// One call of a hub method (a Socket.IO event), with an invocation id (an ack id) when
    /// the caller wants an answer.
    pub fn call(self, method: &str, args: &[&str], id: Option<u64>) -> Ws {
        match self {
            Wire::SignalR(protocol) | Wire::Raw(protocol) => {
                let message: Message<&[&str], NoValue> = Message::Invocation(Invocation {
                    headers: Headers::new(),
                    invocation_id: id.map(|id| id.to_string()),
                    target: method.into(),
                    arguments: args,
                    stream_ids: Vec::new(),
                });
                let record = protocol.encode_to_bytes(&message).expect("encodes");
                match protocol.transfer_format() {
                    TransferFormat::Text => {
                        Ws::text(String::from_utf8(record.to_vec()).expect("utf-8"))
                    }
                    TransferFormat::Binary => Ws::binary(record),
                }
            }
            Wire::SocketIo => {
                let mut event = vec![method];
                event.extend_from_slice(args);
                let array = serde_json::to_string(&event).expect("encodes");
                match id {
                    Some(id) => Ws::text(format!("42{id}{array}")),
                    None => Ws::text(format!("42{array}")),
                }
            }
        }
    }

    /// Whether a frame is a keep-alive rather than data.
    pub fn is_ping(self, frame: &Ws) -> bool {
        match (self, frame) {
            (Wire::SignalR(protocol), Ws::Text(text)) => {
                text.as_bytes() == protocol.ping_record().as_ref()
            }
            (Wire::SignalR(protocol), Ws::Binary(data)) => *data == protocol.ping_record(),
            (Wire::SocketIo, Ws::Text(text)) => text.as_str() == "2",
            (_, frame) => !(frame.is_text() || frame.is_binary()),
        }
    }
}

/// Opens a WebSocket to a target and completes its handshake. `room` selects the raw
/// baseline's broadcast room (ignored by the other targets, which join groups by invocation).
pub async fn connect(
    port: u16,
    target: &str,
    protocol: Protocol,
    room: Option<&str>,
) -> Result<Socket, String> {
    let url = match target {
        "raw" => match room {
            Some(room) => format!("ws://127.0.0.1:{port}/room/{room}"),
            None => format!("ws://127.0.0.1:{port}/echo"),
        },
        "socket.io" => format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"),
        _ => format!("ws://127.0.0.1:{port}/hub"),
    };
    tokio::time::timeout(Duration::from_secs(20), open(&url, target, protocol))
        .await
        .map_err(|_| format!("{target}: connecting timed out"))?
}

/// The WebSocket upgrade and the target's own handshake.
pub async fn open(url: &str, target: &str, protocol: Protocol) -> Result<Socket, String> {
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("{target}: {e}"))?;
    match target {
        "raw" => {}
        "socket.io" => {
            // The Engine.IO open packet, then a connect to the main namespace.
            next_text(&mut socket, target, "0").await?;
            socket
                .send(Ws::text("40"))
                .await
                .map_err(|e| e.to_string())?;
            next_text(&mut socket, target, "40").await?;
        }
        _ => {
            let handshake = format!(
                "{{\"protocol\":\"{}\",\"version\":1}}\u{1e}",
                protocol.name()
            );
            socket
                .send(Ws::text(handshake))
                .await
                .map_err(|e| e.to_string())?;
            let answer = next_text(&mut socket, target, "{").await?;
            if answer.contains("error") {
                return Err(format!("{target}: handshake refused: {answer}"));
            }
        }
    }
    Ok(socket)
}

/// The next frame, which must start with `prefix` (a SignalR handshake answer comes as a binary
/// frame when the protocol is binary, so either kind is accepted).
async fn next_text(socket: &mut Socket, target: &str, prefix: &str) -> Result<String, String> {
    let frame = socket.next().await;
    let text = match &frame {
        Some(Ok(frame)) => frame_bytes(frame).map(String::from_utf8_lossy),
        _ => None,
    };
    match text {
        Some(text) if text.starts_with(prefix) => Ok(text.into_owned()),
        _ => Err(format!(
            "{target}: expected a frame starting with {prefix:?}, got {frame:?}"
        )),
    }
}

/// Waits for the next data frame carrying a marker, skipping keep-alives.
pub async fn next_data(socket: &mut Socket, wire: Wire) -> bool {
    loop {
        match socket.next().await {
            Some(Ok(frame)) if wire.is_ping(&frame) => continue,
            Some(Ok(frame)) => {
                if frame_bytes(&frame).is_some_and(|b| markers(b).next().is_some()) {
                    return true;
                }
            }
            _ => return false,
        }
    }
}

/// Waits for the answer to a call (a completion, an ack): the next data frame.
pub async fn next_answer(socket: &mut Socket, wire: Wire) -> Result<(), String> {
    let wait = async {
        loop {
            match socket.next().await {
                Some(Ok(frame)) if wire.is_ping(&frame) => continue,
                Some(Ok(frame)) => return Ok(frame),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("closed".to_string()),
            }
        }
    };
    let frame = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .map_err(|_| "no answer".to_string())??;
    let text = frame_bytes(&frame).map(String::from_utf8_lossy);
    match text {
        Some(text) if text.contains("\"error\"") => Err(format!("call failed: {text}")),
        _ => Ok(()),
    }
}

/// A SignalR connection over long polling: a negotiated token, a poll loop feeding `received`,
/// and POSTs for sending.
pub struct LongPolling {
    http: reqwest::Client,
    url: String,
    pub received: mpsc::UnboundedReceiver<Vec<u8>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for LongPolling {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl LongPolling {
    /// Negotiates, starts polling and completes the JSON handshake.
    pub async fn connect(http: &reqwest::Client, port: u16) -> Result<LongPolling, String> {
        let token = negotiate(http, port).await?;
        let url = format!("http://127.0.0.1:{port}/hub?id={token}");
        let (tx, received) = mpsc::unbounded_channel();
        let poller = tokio::spawn({
            let http = http.clone();
            let url = url.clone();
            async move {
                loop {
                    let Ok(response) = http.get(&url).send().await else {
                        return;
                    };
                    // 204 means the server closed the connection.
                    if response.status() != reqwest::StatusCode::OK {
                        return;
                    }
                    let Ok(body) = response.bytes().await else {
                        return;
                    };
                    if !body.is_empty() && tx.send(body.to_vec()).is_err() {
                        return;
                    }
                }
            }
        });
        let mut connection = LongPolling {
            http: http.clone(),
            url,
            received,
            poller,
        };
        connection
            .send(b"{\"protocol\":\"json\",\"version\":1}\x1e".to_vec())
            .await?;
        let answer = tokio::time::timeout(Duration::from_secs(10), connection.received.recv())
            .await
            .map_err(|_| "long polling: no handshake answer".to_string())?
            .ok_or("long polling: closed during the handshake")?;
        if answer.starts_with(b"{\"error\"") {
            return Err("long polling: handshake refused".into());
        }
        Ok(connection)
    }

    pub async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let response = self
            .http
            .post(&self.url)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("long polling send: {}", response.status()))
        }
    }
}

/// `POST /hub/negotiate?negotiateVersion=1`: the connection token.
pub async fn negotiate(http: &reqwest::Client, port: u16) -> Result<String, String> {
    let response = http
        .post(format!(
            "http://127.0.0.1:{port}/hub/negotiate?negotiateVersion=1"
        ))
        .send()
        .await
        .map_err(|e| format!("negotiate: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("negotiate: {}", response.status()));
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| format!("negotiate: {e}"))?;
    body["connectionToken"]
        .as_str()
        .or_else(|| body["connectionId"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("negotiate: no token in {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_through_a_payload() {
        let at = Instant::now() + Duration::from_millis(5);
        let text = payload(at);
        assert_eq!(text.len(), PAYLOAD_LEN);
        let framed = format!("{{\"type\":3,\"result\":\"{text}\"}}\u{1e}@12{{\"x\":\"{text}\"}}");
        let found: Vec<u64> = markers(framed.as_bytes()).collect();
        assert_eq!(found, vec![micros(at), micros(at)]);
    }

    #[test]
    fn socket_io_calls_are_event_packets() {
        let frame = Wire::SocketIo.call("JoinGroup", &["g1"], Some(7));
        assert_eq!(frame, Ws::text("427[\"JoinGroup\",\"g1\"]"));
        assert!(Wire::SocketIo.is_ping(&Ws::text("2")));
    }
}
