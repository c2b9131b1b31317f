//! The HTTP-level limits of `serve_with` (`ServeOptions`) over real loopback sockets: the
//! request headers and keep-alive timeouts (in virtual time, and once in real time with short
//! limits), the connection caps, and the body and header size limits.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use signalr_core::{Hub, MinDataRate, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const RS: char = '\u{1e}';
const SECOND: Duration = Duration::from_secs(1);
/// Bound on every single exchange; in virtual time it only fires if the server never answers.
const WAIT: Duration = Duration::from_secs(5);

async fn echo(text: String) -> String {
    text
}

/// Serves a hub with `Echo` at `/hub`, with `options`.
async fn start(options: ServeOptions) -> SocketAddr {
    start_hub(Hub::builder().method("Echo", echo).build(), options).await
}

async fn start_hub(hub: Hub, options: ServeOptions) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(signalr_core::serve_with(
        listener,
        "/hub",
        hub,
        options,
        std::future::pending(),
    ));
    addr
}

/// An HTTP/1.1 response as read off the socket.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Reads one response with a `Content-Length` body (or, when the server closes after it,
/// the rest of the stream).
async fn read_response(stream: &mut TcpStream) -> Response {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("readable");
        assert!(n > 0, "closed before a response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length = head.lines().find_map(|line| {
        line.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap())
    });
    let mut body = buf[head_end..].to_vec();
    match length {
        Some(length) => {
            while body.len() < length {
                let mut chunk = [0; 4096];
                let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "closed inside a body");
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            tokio::time::timeout(WAIT, stream.read_to_end(&mut body))
                .await
                .unwrap()
                .unwrap();
        }
    }
    Response {
        status,
        head,
        body: String::from_utf8(body).unwrap(),
    }
}

/// One request on a fresh connection, closed after.
async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await;
    // Until the server closed its end, so that its place under the caps is free again.
    assert!(
        is_closed(&mut stream).await,
        "kept open after Connection: close"
    );
    response
}

/// A negotiate on a fresh connection: the connection token.
async fn negotiate(addr: SocketAddr) -> String {
    let response = call(addr, "POST", "/hub/negotiate?negotiateVersion=1", "").await;
    assert_eq!(response.status, 200, "{response:?}");
    response.json()["connectionToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Whether the server still holds `stream` open: nothing to read, and no end of stream.
async fn is_open(stream: &mut TcpStream) -> bool {
    let mut byte = [0; 1];
    match tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut byte)).await {
        Err(_elapsed) => true,
        Ok(Ok(0) | Err(_)) => false,
        Ok(Ok(_)) => panic!("the server sent something unasked"),
    }
}

/// Whether the server closed `stream` (end of stream or reset), waiting at most [`WAIT`].
async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) | Ok(Err(_)) => true,
        Err(_elapsed) => false,
    }
}

/// `count` connections that never finish a request head: even ones send nothing, odd ones
/// half a header.
async fn stalled_sockets(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            stream
                .write_all(b"GET /hub?id=x HTTP/1.1\r\nHost: test\r\nX-Half: ")
                .await
                .unwrap();
        }
        sockets.push(stream);
    }
    sockets
}

#[tokio::test(start_paused = true)]
async fn stalled_connections_close_at_the_headers_timeout_while_others_are_served() {
    let addr = start(ServeOptions::default()).await;
    let mut stalled = stalled_sockets(addr, 300).await;
    let opened = Instant::now();
    // Served during the flood, on fresh connections.
    negotiate(addr).await;

    tokio::time::sleep(Duration::from_secs(29)).await;
    for (i, socket) in stalled.iter_mut().enumerate() {
        assert!(is_open(socket).await, "socket {i} closed before 30 s");
    }
    negotiate(addr).await;

    tokio::time::sleep_until(opened + Duration::from_secs(31)).await;
    for (i, socket) in stalled.iter_mut().enumerate() {
        assert!(is_closed(socket).await, "socket {i} still open after 31 s");
    }
    negotiate(addr).await;
}

#[tokio::test]
async fn in_real_time_300_stalled_connections_close_and_their_descriptors_are_freed() {
    let options = ServeOptions::default().request_headers_timeout(SECOND);
    let addr = start(options).await;
    // The first negotiate opens what the server keeps for good (its timers, the hub's tasks).
    negotiate(addr).await;
    let descriptors_before = open_descriptors();

    let started = std::time::Instant::now();
    let mut stalled = stalled_sockets(addr, 300).await;
    // Both ends of each socket are in this process.
    assert!(open_descriptors() >= descriptors_before + 2 * 300 - 10);
    negotiate(addr).await;
    for (i, socket) in stalled.iter_mut().enumerate() {
        assert!(is_closed(socket).await, "socket {i} still open");
    }
    let all_closed = started.elapsed();
    assert!(
        all_closed >= SECOND && all_closed < 4 * SECOND,
        "closed after {all_closed:?}"
    );
    negotiate(addr).await;
    drop(stalled);
    // The server closed its ends first; now ours are gone too.
    let deadline = std::time::Instant::now() + WAIT;
    while open_descriptors() > descriptors_before + 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        open_descriptors() <= descriptors_before + 5,
        "{} descriptors open, {descriptors_before} before",
        open_descriptors()
    );
}

/// Open file descriptors of this process (Linux); elsewhere a constant, so the checks pass.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

const NEGOTIATE: &str =
    "POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n";

/// A keep-alive connection that made one request.
async fn answered_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(NEGOTIATE.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    stream
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_closes_after_the_keep_alive_timeout() {
    let addr = start(ServeOptions::default()).await;
    let at = |secs| Instant::now() + Duration::from_secs(secs);
    // Idle after its response: kept 130 s, not the 30 s of the headers timeout.
    let mut idle = answered_connection(addr).await;
    // Starts its next request at 120 s and never finishes the head: from its first byte it
    // has the headers timeout (Kestrel's rule), so it lives until 150 s.
    let mut slow = answered_connection(addr).await;
    // Asks again every 100 s: each response starts the keep-alive timeout anew.
    let mut busy = answered_connection(addr).await;
    let (t100, t120, t129, t131, t149, t151, t200) = (
        at(100),
        at(120),
        at(129),
        at(131),
        at(149),
        at(151),
        at(200),
    );

    tokio::time::sleep_until(t100).await;
    busy.write_all(NEGOTIATE.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut busy).await.status, 200);

    tokio::time::sleep_until(t120).await;
    slow.write_all(b"P").await.unwrap();

    tokio::time::sleep_until(t129).await;
    assert!(
        is_open(&mut idle).await,
        "closed before the keep-alive timeout"
    );
    assert!(is_open(&mut slow).await);

    tokio::time::sleep_until(t131).await;
    assert!(
        is_closed(&mut idle).await,
        "kept past the keep-alive timeout"
    );
    assert!(
        is_open(&mut slow).await,
        "a started request head got the keep-alive timeout"
    );

    tokio::time::sleep_until(t149).await;
    assert!(
        is_open(&mut slow).await,
        "closed before its headers timeout"
    );
    tokio::time::sleep_until(t151).await;
    assert!(
        is_closed(&mut slow).await,
        "a half head outlived the headers timeout"
    );

    tokio::time::sleep_until(t200).await;
    busy.write_all(NEGOTIATE.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut busy).await.status, 200);
}

type WebSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket to `url`, past the JSON handshake.
async fn open_websocket(url: &str) -> WebSocket {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    socket
        .send(WsMessage::text(format!(
            "{{\"protocol\":\"json\",\"version\":1}}{RS}"
        )))
        .await
        .unwrap();
    let handshake = tokio::time::timeout(WAIT, socket.next()).await.unwrap();
    assert_eq!(
        handshake.unwrap().unwrap().into_text().unwrap().as_str(),
        format!("{{}}{RS}")
    );
    socket
}

/// Short timers for the tests that prove what must not be cut.
fn short_timers() -> ServeOptions {
    ServeOptions::default()
        .request_headers_timeout(5 * SECOND)
        .keep_alive_timeout(5 * SECOND)
}

fn ping() -> String {
    format!("{{\"type\":6}}{RS}")
}

fn echo_invocation(id: &str) -> String {
    format!(
        "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"Echo\",\"arguments\":[\"hi\"]}}{RS}"
    )
}

fn echo_completion(id: &str) -> String {
    format!("{{\"type\":3,\"invocationId\":\"{id}\",\"result\":\"hi\"}}{RS}")
}

#[tokio::test(start_paused = true)]
async fn an_open_websocket_outlives_the_http_timeouts() {
    let addr = start(short_timers()).await;
    let token = negotiate(addr).await;
    let mut socket = open_websocket(&format!("ws://{addr}/hub?id={token}")).await;
    // A minute, twelve times the keep-alive timeout, pinging as clients do.
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(10 * SECOND).await;
        socket.send(WsMessage::text(ping())).await.unwrap();
    }
    socket
        .send(WsMessage::text(echo_invocation("1")))
        .await
        .unwrap();
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("the WebSocket answers")
            .expect("still open")
            .unwrap();
        if message.into_text().unwrap().as_str() == echo_completion("1") {
            break;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_pending_long_poll_outlives_the_http_timeouts() {
    let hub = Hub::builder().method("Echo", echo).build();
    let addr = start_hub(hub, short_timers()).await;
    let token = negotiate(addr).await;
    let poll = format!("/hub?id={token}");
    assert_eq!(call(addr, "GET", &poll, "").await.status, 200);
    let handshake = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    assert_eq!(call(addr, "POST", &poll, &handshake).await.status, 200);
    assert_eq!(call(addr, "GET", &poll, "").await.body, format!("{{}}{RS}"));

    // Nothing to send: the poll waits the hub's 90 s, eighteen keep-alive timeouts.
    let mut pending = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {poll} HTTP/1.1\r\nHost: test\r\n\r\n");
    pending.write_all(request.as_bytes()).await.unwrap();
    let asked = Instant::now();
    tokio::time::sleep(Duration::from_secs(89)).await;
    assert!(is_open(&mut pending).await, "the long poll was cut");
    tokio::time::sleep(2 * SECOND).await;
    let answer = read_response(&mut pending).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, ""));
    assert!(asked.elapsed() >= Duration::from_secs(90));
}

#[tokio::test(start_paused = true)]
async fn an_open_event_stream_outlives_the_http_timeouts() {
    let addr = start(short_timers()).await;
    let token = negotiate(addr).await;
    let target = format!("/hub?id={token}");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let handshake = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    assert_eq!(call(addr, "POST", &target, &handshake).await.status, 200);

    let opened = Instant::now();
    while opened.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(10 * SECOND).await;
        assert_eq!(call(addr, "POST", &target, &ping()).await.status, 200);
    }
    assert_eq!(
        call(addr, "POST", &target, &echo_invocation("1"))
            .await
            .status,
        200
    );
    // Everything the stream carried, pings included, up to the completion.
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains(&echo_completion("1")) {
        let mut chunk = [0; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("the stream answers")
            .unwrap();
        assert!(n > 0, "the event stream was cut");
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&received).contains("data: {\"type\":6}"));
}

#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_gets_goaway_after_the_keep_alive_timeout() {
    let addr = start(ServeOptions::default()).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let mut connection = tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}/hub/negotiate"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let answered = Instant::now();

    tokio::time::sleep(Duration::from_secs(129)).await;
    assert!(
        !connection.is_finished(),
        "closed before the keep-alive timeout"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut connection)
        .await
        .expect("the server ends the idle connection");
    assert!(ended.unwrap().is_ok(), "a GOAWAY, not an error");
    assert!(answered.elapsed() >= Duration::from_secs(130));
}

/// A socket from `local` (any 127.x.y.z address is loopback on Linux).
async fn connect_from(local: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((local, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Negotiates on a fresh connection until the server serves it again (it frees a slot once
/// it has seen a socket close), at most [`WAIT`].
async fn served_again(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        let response = call(addr, "POST", "/hub/negotiate?negotiateVersion=1", "").await;
        if response.status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "still refused: {response:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_refused(response: &Response, error: &str) {
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response
        .head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    assert_eq!(response.json(), serde_json::json!({ "error": error }));
}

const TOO_MANY: &str = "The server has too many connections; try again later.";

#[tokio::test]
async fn past_the_connection_cap_clients_get_503_until_connections_close() {
    let addr = start(ServeOptions::default().max_connections(20)).await;
    // An upgraded WebSocket holds its place like any other connection.
    let token = negotiate(addr).await;
    let (websocket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/hub?id={token}"))
        .await
        .unwrap();
    let mut held = stalled_sockets(addr, 19).await;

    // Refused at once, before sending anything, and closed after the answer.
    let mut refused = TcpStream::connect(addr).await.unwrap();
    assert_refused(&read_response(&mut refused).await, TOO_MANY);
    assert!(is_closed(&mut refused).await);
    // A client that sends its request anyway reads the same answer.
    let response = call(addr, "POST", "/hub/negotiate?negotiateVersion=1", "").await;
    assert_refused(&response, TOO_MANY);

    held.truncate(10);
    served_again(addr).await;
    drop(websocket);
}

#[tokio::test]
async fn past_the_per_address_cap_that_address_gets_503_and_others_are_served() {
    let addr = start(ServeOptions::default().max_connections_per_ip(3)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from([127, 0, 0, 1], addr).await);
    }
    let mut refused = connect_from([127, 0, 0, 1], addr).await;
    assert_refused(
        &read_response(&mut refused).await,
        "Too many connections from this address; try again later.",
    );
    // Another address is served.
    let mut other = connect_from([127, 0, 0, 2], addr).await;
    other.write_all(NEGOTIATE.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut other).await.status, 200);
    // And the first one again once one of its connections closed.
    held.pop();
    served_again(addr).await;
}

/// Sends a request head declaring `length` body bytes, and no body.
async fn declare_body(addr: SocketAddr, path: &str, length: usize) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

fn assert_too_large(response: &Response) {
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(
        response.json(),
        serde_json::json!({ "error": "The request body is too large." })
    );
}

#[tokio::test]
async fn bodies_past_the_limit_get_413() {
    // The default limit, by its declaration alone: nothing is read.
    let addr = start(ServeOptions::default()).await;
    assert_too_large(&declare_body(addr, "/hub/negotiate", 30_000_001).await);
    let token = negotiate(addr).await;
    assert_too_large(&declare_body(addr, &format!("/hub?id={token}"), 30_000_001).await);

    let addr = start(ServeOptions::default().max_request_body_size(64 * 1024)).await;
    assert_too_large(&declare_body(addr, "/hub/negotiate", 64 * 1024 + 1).await);
    let token = negotiate(addr).await;
    let target = format!("/hub?id={token}");
    assert_eq!(call(addr, "GET", &target, "").await.status, 200);
    let handshake = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    assert_eq!(call(addr, "POST", &target, &handshake).await.status, 200);

    // A chunked long-polling POST that grows past the limit: pings, 70 KiB of them.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST {target} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let pings = ping().repeat(1024);
    let chunk = format!("{:x}\r\n{pings}\r\n", pings.len());
    let mut sent = 0;
    while sent <= 70 * 1024 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        sent += pings.len();
    }
    assert_too_large(&read_response(&mut stream).await);

    // The pings read before the limit reached the connection; what came after them did not,
    // so the connection ends with an error rather than read on past the hole.
    assert_closed_with_an_error(addr, &target).await;
    // The server goes on.
    negotiate(addr).await;
}

/// Polls `target` until its connection's Close arrives: it must carry an error, and the poll
/// after it must say the connection is over (204).
async fn assert_closed_with_an_error(addr: SocketAddr, target: &str) {
    assert_closed_with_an_error_after(addr, target, String::new()).await;
}

/// The same, with `received` already taken from earlier polls.
async fn assert_closed_with_an_error_after(addr: SocketAddr, target: &str, mut received: String) {
    while !received.contains("\"type\":7") {
        let poll = call(addr, "GET", target, "").await;
        assert_eq!(poll.status, 200, "{poll:?} after {received:?}");
        received.push_str(&poll.body);
    }
    let close = received
        .split(RS)
        .find(|record| record.contains("\"type\":7"))
        .unwrap();
    let close: serde_json::Value = serde_json::from_str(close).unwrap();
    assert!(close["error"].is_string(), "{close}");
    assert_eq!(call(addr, "GET", target, "").await.status, 204);
    let later = call(addr, "POST", target, &ping()).await;
    assert_eq!(later.status, 404, "{later:?}");
}

#[tokio::test]
async fn a_post_cut_off_inside_a_record_ends_its_connection_with_an_error() {
    let addr = start(ServeOptions::default()).await;
    let target = long_polling_connection(addr).await;

    // One whole invocation, then half of a second one, and the client goes away.
    let whole = echo_invocation("1");
    let second = echo_invocation("2");
    let half = &second[..second.len() / 2];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{whole}{half}",
        whole.len() + second.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);

    // The whole one is answered; then the connection ends instead of waiting for the rest
    // of a record whose middle is lost.
    let mut received = String::new();
    while !received.contains(&echo_completion("1")) {
        let poll = call(addr, "GET", &target, "").await;
        assert_eq!(poll.status, 200, "{poll:?}");
        received.push_str(&poll.body);
    }
    assert_closed_with_an_error_after(addr, &target, received).await;
}

async fn ten_seconds() {
    tokio::time::sleep(10 * SECOND).await;
}

#[tokio::test(start_paused = true)]
async fn a_post_its_connection_stops_reading_ends_the_connection_once_the_rest_is_read() {
    let hub = Hub::builder()
        .method("Echo", echo)
        .method("TenSeconds", ten_seconds)
        .max_parallel_invocations(1)
        .send_timeout(2 * SECOND)
        .build();
    let addr = start_hub(hub, ServeOptions::default()).await;
    let target = long_polling_connection(addr).await;

    // A 10 s method holds the only invocation slot, so the read loop waits with the Echo
    // behind it, and the POST's chunks back up until the send timeout gives up on them.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST {target} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let slow = format!(
        "{{\"type\":1,\"invocationId\":\"1\",\"target\":\"TenSeconds\",\"arguments\":[]}}{RS}"
    );
    let mut chunks = vec![format!("{slow}{}", echo_invocation("2"))];
    chunks.extend((0..20).map(|_| ping()));
    for chunk in &chunks {
        let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        stream.write_all(framed.as_bytes()).await.unwrap();
    }
    let refused = read_response(&mut stream).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.body.contains("it is closed"), "{refused:?}");

    // Once the slot is free, what came before the hole is answered, then the error Close.
    tokio::time::sleep(9 * SECOND).await;
    let poll = call(addr, "GET", &target, "").await;
    assert_eq!(poll.status, 200, "{poll:?}");
    assert!(poll.body.contains(&echo_completion("2")), "{poll:?}");
    assert_closed_with_an_error_after(addr, &target, poll.body).await;
}

/// Sends a negotiate with one extra header of `size` bytes.
async fn negotiate_with_header(addr: SocketAddr, size: usize) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let value = "a".repeat(size);
    let head = format!(
        "POST /hub/negotiate HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nX-Big: {value}\r\n\r\n"
    );
    // The server may answer and close before it read everything.
    let _ = stream.write_all(head.as_bytes()).await;
    read_response(&mut stream).await
}

#[tokio::test]
async fn request_heads_past_the_limit_get_431() {
    let addr = start(ServeOptions::default()).await;
    // The default 32 KiB, counted as Kestrel does (`name: value` and a line end each).
    let others = "Host: test\r\n".len() + "Content-Length: 0\r\n".len() + "X-Big: \r\n".len();
    assert_eq!(
        negotiate_with_header(addr, 32 * 1024 - others).await.status,
        200
    );
    let refused = negotiate_with_header(addr, 32 * 1024 - others + 1).await;
    assert_eq!(refused.status, 431, "{refused:?}");
    assert_eq!(
        refused.json(),
        serde_json::json!({ "error": "The request headers are too large." })
    );
    // Far past it, hyper stops reading the head at all.
    assert_eq!(negotiate_with_header(addr, 1 << 20).await.status, 431);

    let addr = start(ServeOptions::default().max_request_headers_total_size(4096)).await;
    assert_eq!(negotiate_with_header(addr, 5000).await.status, 431);
    assert_eq!(negotiate_with_header(addr, 3000).await.status, 200);
}

/// A long-polling connection past its handshake: its `?id=` target.
async fn long_polling_connection(addr: SocketAddr) -> String {
    let token = negotiate(addr).await;
    let target = format!("/hub?id={token}");
    assert_eq!(call(addr, "GET", &target, "").await.status, 200);
    let handshake = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    assert_eq!(call(addr, "POST", &target, &handshake).await.status, 200);
    assert_eq!(
        call(addr, "GET", &target, "").await.body,
        format!("{{}}{RS}")
    );
    target
}

/// Starts a POST to `target` whose head declares `length` body bytes, with `first` of them.
async fn start_post(addr: SocketAddr, target: &str, length: usize, first: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n{first}");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

fn assert_too_slow(response: &Response) {
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(
        response.json(),
        serde_json::json!({ "error": "The request body arrived too slowly." })
    );
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{response:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_gets_408_after_the_grace_period_and_its_connection_closes() {
    let addr = start(ServeOptions::default()).await;
    let target = long_polling_connection(addr).await;

    // One whole record of a body that promised a thousand bytes, then nothing.
    let began = Instant::now();
    let mut stream = start_post(addr, &target, 1000, &ping()).await;
    tokio::time::sleep(Duration::from_millis(4900)).await;
    assert!(is_open(&mut stream).await, "cut before the grace period");
    assert_too_slow(&read_response(&mut stream).await);
    let took = began.elapsed();
    assert!(
        (Duration::from_secs(5)..Duration::from_millis(5200)).contains(&took),
        "{took:?}"
    );
    assert!(is_closed(&mut stream).await);
    // Part of the body reached the connection, so it ends (see the cut-off test above).
    assert_closed_with_an_error(addr, &target).await;

    // A negotiate never reads its body: it is answered at once, and the connection is not
    // kept waiting for the rest.
    let mut stream = start_post(addr, "/hub/negotiate?negotiateVersion=1", 1000, "").await;
    assert_eq!(read_response(&mut stream).await.status, 200);
    assert!(is_closed(&mut stream).await, "held for a body nobody reads");
}

/// In real time: hyper's HTTP/2 handshake and stream setup take several round trips, which
/// paused time can run past.
#[tokio::test]
async fn a_too_slow_http2_body_gets_408_and_its_connection_ends_once_the_others_finish() {
    let rate = MinDataRate::new(240.0, SECOND);
    let addr = start(ServeOptions::default().min_request_body_data_rate(rate)).await;
    let polled = long_polling_connection(addr).await;
    let stalled = long_polling_connection(addr).await;
    let (mut sender, connection) = http2_connection(addr).await;
    // One stream waits in a long poll of one hub connection...
    let poll = http::Request::get(format!("http://{addr}{polled}"))
        .body(Empty::<Bytes>::new().boxed_unsync())
        .unwrap();
    let poll = tokio::spawn(sender.send_request(poll));
    // ...while another posts to a second one a body that sends one ping, then nothing.
    let (body, took) = post_a_body_that_stalls(&mut sender, addr, &stalled).await;
    assert!((SECOND..3 * SECOND).contains(&took), "{took:?}");

    // The long poll was not the slow one: what its hub connection writes still reaches it
    // (with one flag per connection it would have been answered 408 too, its data lost).
    assert_eq!(
        call(addr, "POST", &polled, &echo_invocation("1"))
            .await
            .status,
        200
    );
    let answer = tokio::time::timeout(WAIT, poll)
        .await
        .expect("the poll is answered")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), 200);
    let data = answer.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&data).contains(&echo_completion("1")),
        "{data:?}"
    );
    // The GOAWAY let the poll finish; with both streams done the connection ends (there is
    // no hard stop, so only the GOAWAY can end it), and a client cannot trickle one stream
    // after another on it.
    tokio::time::timeout(WAIT, connection)
        .await
        .expect("the HTTP/2 connection ends")
        .unwrap()
        .unwrap();
    assert!(sender.ready().await.is_err(), "a new stream is refused");
    drop(body);
}

/// In real time, like the test above. The `GOAWAY` is the whole answer to a slow body on
/// HTTP/2: behind a proxy the connection's other streams are other users', so a stream that
/// lives on (here an event stream) is not cut; Kestrel would abort it.
#[tokio::test]
async fn after_a_too_slow_http2_body_the_connections_other_streams_live_on() {
    let rate = MinDataRate::new(240.0, SECOND);
    let addr = start(ServeOptions::default().min_request_body_data_rate(rate)).await;
    let stalled = long_polling_connection(addr).await;
    let events = format!("/hub?id={}", negotiate(addr).await);
    let (mut sender, connection) = http2_connection(addr).await;
    let subscribe = http::Request::get(format!("http://{addr}{events}"))
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new().boxed_unsync())
        .unwrap();
    let mut event_stream = sender.send_request(subscribe).await.unwrap().into_body();
    let handshake = format!("{{\"protocol\":\"json\",\"version\":1}}{RS}");
    assert_eq!(call(addr, "POST", &events, &handshake).await.status, 200);
    let mut received = String::new();
    read_events_until(&mut event_stream, &mut received, &format!("{{}}{RS}")).await;

    // A body that stops after one ping, on another stream of the same connection.
    let (body, _) = post_a_body_that_stalls(&mut sender, addr, &stalled).await;

    // Past the 5 s a hard stop would have given it, the event stream still carries answers.
    tokio::time::sleep(6 * SECOND).await;
    assert_eq!(
        call(addr, "POST", &events, &echo_invocation("1"))
            .await
            .status,
        200
    );
    read_events_until(&mut event_stream, &mut received, &echo_completion("1")).await;
    assert!(!connection.is_finished());
    // But the connection takes no new stream: it was sent a GOAWAY.
    let another = http::Request::post(format!("http://{addr}/hub/negotiate?negotiateVersion=1"))
        .body(Empty::<Bytes>::new().boxed_unsync())
        .unwrap();
    let refused = tokio::time::timeout(WAIT, sender.send_request(another))
        .await
        .expect("a new stream is answered or refused at once");
    assert!(refused.is_err(), "{refused:?}");
    drop(body);
}

type H2Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// An HTTP/2 client connection (prior knowledge) to `addr`, driven by a task of its own.
async fn http2_connection(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<H2Body>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

/// Posts to `target` over HTTP/2 a body that sends one ping, then nothing until the returned
/// sender is dropped; asserts the `408` and says how long it took.
async fn post_a_body_that_stalls(
    sender: &mut hyper::client::conn::http2::SendRequest<H2Body>,
    addr: SocketAddr,
    target: &str,
) -> (tokio::sync::mpsc::Sender<Bytes>, Duration) {
    let (chunk_sender, chunks) = tokio::sync::mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        Some((
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)),
            chunks,
        ))
    });
    chunk_sender.send(Bytes::from(ping())).await.unwrap();
    let began = std::time::Instant::now();
    let post = http::Request::post(format!("http://{addr}{target}"))
        .body(http_body_util::StreamBody::new(Box::pin(frames)).boxed_unsync())
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(post))
        .await
        .expect("the stalled body is answered")
        .unwrap();
    assert_eq!(response.status(), 408);
    (chunk_sender, began.elapsed())
}

/// Reads an event stream's data into `received` until it contains `expected`.
async fn read_events_until(
    body: &mut hyper::body::Incoming,
    received: &mut String,
    expected: &str,
) {
    while !received.contains(expected) {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {expected:?} in {received:?}"))
            .expect("the event stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            received.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

/// Sends `records` pings, one every `gap`, as one POST body; the response.
async fn trickle(addr: SocketAddr, target: &str, records: usize, gap: Duration) -> Response {
    let record = ping();
    let mut stream = start_post(addr, target, records * record.len(), "").await;
    for _ in 0..records {
        tokio::time::sleep(gap).await;
        if stream.write_all(record.as_bytes()).await.is_err() {
            break;
        }
    }
    read_response(&mut stream).await
}

#[tokio::test(start_paused = true)]
async fn a_body_above_the_minimum_rate_is_read_to_its_end_and_one_below_it_is_not() {
    let addr = start(ServeOptions::default()).await;
    let target = long_polling_connection(addr).await;
    // 11 bytes every 40 ms: 275 bytes/s, for 12 s.
    let response = trickle(addr, &target, 300, Duration::from_millis(40)).await;
    assert_eq!(response.status, 200, "{response:?}");

    // 11 bytes every 50 ms: 220 bytes/s, cut once the grace period is over.
    let target = long_polling_connection(addr).await;
    let began = Instant::now();
    assert_too_slow(&trickle(addr, &target, 300, Duration::from_millis(50)).await);
    let took = began.elapsed();
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(6)).contains(&took),
        "{took:?}"
    );

    // Turned off, a stalled body just waits.
    let addr = start(ServeOptions::default().min_request_body_data_rate(None)).await;
    let target = long_polling_connection(addr).await;
    let mut stream = start_post(addr, &target, 1000, &ping()).await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(is_open(&mut stream).await);
}

#[tokio::test]
async fn in_real_time_a_stalled_body_gets_408_after_a_short_grace_period() {
    let rate = MinDataRate::new(240.0, SECOND);
    let addr = start(ServeOptions::default().min_request_body_data_rate(rate)).await;
    let target = long_polling_connection(addr).await;
    let began = std::time::Instant::now();
    let mut stream = start_post(addr, &target, 1000, "").await;
    assert_too_slow(&read_response(&mut stream).await);
    let took = began.elapsed();
    assert!((SECOND..3 * SECOND).contains(&took), "{took:?}");
    // Nothing reached the connection, so it carries on.
    assert_eq!(
        call(addr, "POST", &target, &echo_invocation("1"))
            .await
            .status,
        200
    );
    let answer = call(addr, "GET", &target, "").await;
    assert_eq!(answer.body, echo_completion("1"));
}

/// Serves `GET /big`, `size` bytes of zeros in 1 MiB chunks, and `GET /small`.
async fn start_big_responses(options: ServeOptions, size: usize) -> SocketAddr {
    use axum::routing::get;
    const MIB: usize = 1 << 20;
    let big = move || async move {
        let chunks = (0..size.div_ceil(MIB))
            .map(move |i| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; MIB.min(size - i * MIB)])));
        axum::body::Body::from_stream(futures_util::stream::iter(chunks))
    };
    let app = axum::Router::new()
        .route("/big", get(big))
        .route("/small", get(|| async { "small" }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pending = std::future::pending();
    tokio::spawn(signalr_core::serve_service(listener, app, options, pending));
    addr
}

/// A server of big responses, and a connection that asked it for one (256 MiB).
async fn ask_for_big_response(options: ServeOptions) -> (SocketAddr, TcpStream) {
    let addr = start_big_responses(options, 256 << 20).await;
    let mut reader = TcpStream::connect(addr).await.unwrap();
    reader
        .write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    (addr, reader)
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_after_the_grace_period_and_its_place_freed() {
    // 1 MiB/s: a blocked 1 MiB write has its 1 s, so the 5 s grace period decides (at the
    // default 240 bytes/s it would have over an hour, as in Kestrel).
    let options = ServeOptions::default()
        .max_connections(1)
        .min_response_data_rate(MinDataRate::new(1024.0 * 1024.0, 5 * SECOND));
    let (addr, mut reader) = ask_for_big_response(options).await;
    // It reads nothing: the kernel's buffers fill, and the server's writes wait.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = call(addr, "GET", "/small", "").await;
    assert_eq!(refused.status, 503, "{refused:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let served = call(addr, "GET", "/small", "").await;
    assert_eq!((served.status, served.body.as_str()), (200, "small"));
    // What it finally reads ends well short of the 256 MiB.
    let mut received = 0usize;
    let mut buf = vec![0; 1 << 20];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(WAIT, reader.read(&mut buf)).await {
        received += n;
    }
    assert!(received < 64 << 20, "{received} bytes");

    // Turned off, the server waits on such a client for as long as it likes.
    let options = ServeOptions::default()
        .max_connections(1)
        .min_response_data_rate(None);
    let (addr, _reader) = ask_for_big_response(options).await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(call(addr, "GET", "/small", "").await.status, 503);
}

#[tokio::test]
async fn in_real_time_a_client_that_stops_reading_is_cut_after_a_short_grace_period() {
    let options = ServeOptions::default()
        .max_connections(1)
        .min_response_data_rate(MinDataRate::new(1024.0 * 1024.0, SECOND));
    let began = std::time::Instant::now();
    let (addr, _reader) = ask_for_big_response(options).await;
    // Its place comes free once the grace period is over (a 503 until then).
    loop {
        let response = call(addr, "GET", "/small", "").await;
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 503, "{response:?}");
        assert!(began.elapsed() < 10 * SECOND, "never cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(began.elapsed() >= SECOND, "{:?}", began.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_client_that_reads_slowly_but_above_the_rate_gets_the_whole_response() {
    let size = 48 << 20;
    let addr = start_big_responses(ServeOptions::default(), size).await;
    let mut reader = TcpStream::connect(addr).await.unwrap();
    reader
        .write_all(b"GET /big HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // 64 KiB every 20 ms, about 3 MiB/s: some 15 s of reading, the server waiting on it.
    let began = Instant::now();
    let mut received = 0usize;
    let mut buf = vec![0; 64 << 10];
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let n = tokio::time::timeout(WAIT, reader.read(&mut buf))
            .await
            .expect("still sending")
            .unwrap();
        if n == 0 {
            break;
        }
        received += n;
    }
    assert!(received > size, "{received} of {size} bytes");
    assert!(
        began.elapsed() > Duration::from_secs(6),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_reading_a_little_at_a_time_above_the_rate_is_not_cut() {
    let (addr, mut reader) = ask_for_big_response(ServeOptions::default().max_connections(1)).await;
    // Let the kernel's buffers fill, then 4 KiB a second, seventeen times the rate: too
    // little each time for the kernel to wake the server's write, which waits throughout.
    tokio::time::sleep(SECOND).await;
    let mut buf = vec![0; 4 << 10];
    for second in 0..30 {
        tokio::time::sleep(SECOND).await;
        let n = tokio::time::timeout(WAIT, reader.read_exact(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("nothing to read at {second} s"));
        assert!(n.is_ok(), "cut at {second} s: {n:?}");
    }
    // What it reads may still be in its own buffers: the server holding its place is what
    // says the connection is still served.
    assert_eq!(call(addr, "GET", "/small", "").await.status, 503, "cut");
}

#[tokio::test(start_paused = true)]
async fn a_websocket_that_stops_reading_is_left_to_the_hubs_send_timeout() {
    let hub = Hub::builder()
        .method("Echo", echo)
        .send_timeout(Duration::from_secs(30))
        .build();
    let addr = start_hub(hub.clone(), ServeOptions::default()).await;
    let mut socket = open_websocket(&format!("ws://{addr}/hub")).await;

    // 16 MiB for it, which it leaves unread for 20 s: four grace periods of the response
    // rate, inside the hub's 30 s send timeout, which is what governs a WebSocket.
    let payload = "x".repeat(256 << 10);
    let context = hub.context();
    for _ in 0..64 {
        let everyone = context.clients().all();
        everyone.send("Big", (payload.clone(),)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut big = 0;
    while big < 64 {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("still sending")
            .expect("still open")
            .expect("not cut");
        big += message.into_text().unwrap().matches("\"Big\"").count();
    }
}
