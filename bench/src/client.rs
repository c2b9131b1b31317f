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
            "socket.io" | "socketioxide" => Wire::SocketIo,
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
                    invocation_id: id.map(|id| id.to_string().into()),
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
        "socket.io" | "socketioxide" => {
            format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket")
        }
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
        "socket.io" | "socketioxide" => {
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

/// Drops a connection with a TCP reset instead of a close: with `SO_LINGER` 0, closing the
/// socket sends RST, as a crashed client or a dropped NAT entry would look to the server.
pub fn reset(socket: Socket) {
    if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        let _ = tcp.set_zero_linger();
    }
    drop(socket);
}

/// The next frame, which must start with `prefix` (a SignalR handshake answer comes as a binary
/// frame when the protocol is binary, so either kind is accepted).
/// An Engine.IO ping met on the way (socketioxide pings as soon as a socket opens) is answered.
async fn next_text(socket: &mut Socket, target: &str, prefix: &str) -> Result<String, String> {
    let mut frame = socket.next().await;
    while matches!(&frame, Some(Ok(Ws::Text(text))) if text.as_str() == "2" && prefix != "2") {
        socket
            .send(Ws::text("3"))
            .await
            .map_err(|e| e.to_string())?;
        frame = socket.next().await;
    }
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

/// The two HTTP transports, which share negotiate and sending by POST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpTransport {
    LongPolling,
    ServerSentEvents,
}

/// The HTTP client the long-polling echoes use: no proxy, and no Nagle delay on its sockets.
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

/// A SignalR connection over long polling or Server-Sent Events: a negotiated token, a reader
/// (the poll loop, or the event stream) feeding `received`, and POSTs for sending.
pub struct HttpConnection {
    http: reqwest::Client,
    url: String,
    transport: HttpTransport,
    pub received: mpsc::UnboundedReceiver<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for HttpConnection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl HttpConnection {
    /// Negotiates, starts reading and completes the handshake for `protocol` (Server-Sent
    /// Events carry text only, so JSON there).
    pub async fn connect(
        http: &reqwest::Client,
        port: u16,
        transport: HttpTransport,
        protocol: Protocol,
    ) -> Result<HttpConnection, String> {
        let token = negotiate(http, port).await?;
        let url = format!("http://127.0.0.1:{port}/hub?id={token}");
        let (tx, received) = mpsc::unbounded_channel();
        let reader = match transport {
            HttpTransport::LongPolling => tokio::spawn(poll_loop(http.clone(), url.clone(), tx)),
            HttpTransport::ServerSentEvents => {
                // The stream binds the transport, so it must be open before the handshake is
                // posted; `send` returns once the response headers are in.
                let response = http
                    .get(&url)
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .send()
                    .await
                    .map_err(|e| format!("event stream: {e}"))?;
                if response.status() != reqwest::StatusCode::OK {
                    return Err(format!("event stream: {}", response.status()));
                }
                tokio::spawn(read_events(response, tx))
            }
        };
        let mut connection = HttpConnection {
            http: http.clone(),
            url,
            transport,
            received,
            reader,
        };
        connection
            .send(
                format!(
                    "{{\"protocol\":\"{}\",\"version\":1}}\u{1e}",
                    protocol.name()
                )
                .into_bytes(),
            )
            .await?;
        let answer = tokio::time::timeout(Duration::from_secs(10), connection.received.recv())
            .await
            .map_err(|_| format!("{transport:?}: no handshake answer"))?
            .ok_or_else(|| format!("{transport:?}: closed during the handshake"))?;
        if answer.starts_with(b"{\"error\"") {
            return Err(format!("{transport:?}: handshake refused"));
        }
        Ok(connection)
    }

    /// Long polling over JSON, as the echo scenario uses it.
    pub async fn long_polling(http: &reqwest::Client, port: u16) -> Result<HttpConnection, String> {
        Self::connect(http, port, HttpTransport::LongPolling, Protocol::Json).await
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
            Err(format!("{:?} send: {}", self.transport, response.status()))
        }
    }

    /// Leaves the way a client's `stop()` does: DELETE for long polling (the server then ends
    /// the pending poll); Server-Sent Events have no DELETE, so the stream is closed.
    pub async fn close(self) -> Result<(), String> {
        if self.transport == HttpTransport::LongPolling {
            let response = self
                .http
                .delete(&self.url)
                .send()
                .await
                .map_err(|e| format!("DELETE: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("DELETE: {}", response.status()));
            }
        }
        Ok(())
    }
}

/// Polls until the server ends the connection (204) or the connection is dropped.
async fn poll_loop(http: reqwest::Client, url: String, tx: mpsc::UnboundedSender<Vec<u8>>) {
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

/// Reads an event stream, handing each event's data on.
async fn read_events(mut response: reqwest::Response, tx: mpsc::UnboundedSender<Vec<u8>>) {
    let mut events = EventParser::default();
    while let Ok(Some(chunk)) = response.chunk().await {
        for data in events.push(&chunk) {
            if tx.send(data).is_err() {
                return;
            }
        }
    }
}

/// Splits a `text/event-stream` into the data of its events: `data:` lines joined with `\n`,
/// an event ending at a blank line; comments and other fields are skipped.
#[derive(Default)]
pub struct EventParser {
    line: Vec<u8>,
    data: Option<Vec<u8>>,
}

impl EventParser {
    /// Feeds a chunk; returns the data of every event it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        for &byte in chunk {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.is_empty() {
                done.extend(self.data.take());
            } else if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push(b'\n');
                        data.extend_from_slice(value);
                    }
                    None => self.data = Some(value.to_vec()),
                }
            }
        }
        done
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
    fn event_streams_yield_each_event_s_data_across_chunk_boundaries() {
        let mut parser = EventParser::default();
        // A comment, an event in two chunks, a two-line event, and a half event.
        assert!(parser.push(b":\r\n").is_empty());
        assert!(parser.push(b"data: {}\x1e\r").is_empty());
        assert_eq!(parser.push(b"\n\r\n"), vec![b"{}\x1e".to_vec()]);
        assert_eq!(
            parser.push(b"data: a\r\ndata:b\r\n\r\ndata: c"),
            vec![b"a\nb".to_vec()]
        );
        assert_eq!(parser.push(b"\n\n"), vec![b"c".to_vec()]);
    }

    #[test]
    fn socket_io_calls_are_event_packets() {
        let frame = Wire::SocketIo.call("JoinGroup", &["g1"], Some(7));
        assert_eq!(frame, Ws::text("427[\"JoinGroup\",\"g1\"]"));
        assert!(Wire::SocketIo.is_ping(&Ws::text("2")));
    }
}
