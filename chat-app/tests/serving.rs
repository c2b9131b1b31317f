//! The binary as a client meets it at the socket: the HTTP-level limits of signalr-core's
//! `serve_service` (a body that stops coming gets 408), and the client address the
//! per-address throttles count by, read from each connection's own peer.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Kills the chat-app process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on SQLite in a directory of its own, logins limited to two a minute
/// per address; returns it with its address.
async fn chat_app(dir: &std::path::Path) -> (Killed, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-app"))
        .env_clear()
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.join("chat.db").display()),
        )
        .env("JWT_SECRET", "serving-test-secret-0123456789abcdef")
        .env("LOGIN_RATE_PER_ADDRESS", "2/60")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("chat-app starts");
    let stdout = tokio::process::ChildStdout::from_std(child.stdout.take().unwrap()).unwrap();
    let app = Killed(child);
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("chat-app says where it listens")
    .unwrap();
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("chat-app did not start: {line:?}"));
    (app, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A connection to `app` from `source` (any address in 127.0.0.0/8).
async fn connect_from(source: [u8; 4], app: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from(source), 0))
        .unwrap();
    socket.connect(app).await.unwrap()
}

/// Writes `request` and reads until the server closes: the status and the whole response.
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("an answer, then the close")
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {response:?}"));
    (status, response)
}

fn login(user_name: &str) -> String {
    let body = format!(r#"{{"userName":"{user_name}","password":"not the password"}}"#);
    format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_throttles_count_each_client_address() {
    let dir = std::env::temp_dir().join(format!("chat-serving-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (_app, addr) = chat_app(&dir).await;

    // A login whose body never comes: 408 once the 5 s grace period is over, then closed.
    let mut stream = connect_from([127, 0, 0, 1], addr).await;
    let began = Instant::now();
    let stalled = "POST /api/v1/auth/login HTTP/1.1\r\nHost: test\r\n\
                   Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"userName\":";
    let (status, response) = exchange(&mut stream, stalled).await;
    assert_eq!(status, 408, "{response}");
    assert!(
        response.ends_with(r#"{"error":"The request body arrived too slowly."}"#),
        "{response}"
    );
    let took = began.elapsed();
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(15)).contains(&took),
        "{took:?}"
    );

    // Two logins a minute per address: the third from 127.0.0.2 is throttled, while
    // 127.0.0.3 still gets its answer (401, no such account).
    for attempt in 1..=3 {
        let mut stream = connect_from([127, 0, 0, 2], addr).await;
        let (status, response) = exchange(&mut stream, &login(&format!("nobody{attempt}"))).await;
        let expected = if attempt < 3 { 401 } else { 429 };
        assert_eq!(status, expected, "attempt {attempt}: {response}");
    }
    let mut stream = connect_from([127, 0, 0, 3], addr).await;
    let (status, response) = exchange(&mut stream, &login("somebody")).await;
    assert_eq!(status, 401, "{response}");
    let _ = std::fs::remove_dir_all(&dir);
}
