//! Examples live beside this file; run them with `cargo run --example NAME`. This library holds
//! the little they share: where to listen, logging, and the negotiate call their tests make.

use std::net::SocketAddr;

use signalr_core::Hub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `127.0.0.1` and the port in `PORT`, or `default_port` when it is unset or not a port.
pub fn listen_addr(default_port: u16) -> SocketAddr {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(default_port);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Logs at `info`, or as `RUST_LOG` says.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// What every example's `main` does: logging, then `hub` at `path` on [`listen_addr`] (port
/// 5000 unless `PORT` says otherwise) until Ctrl-C or SIGTERM.
pub async fn serve_example(name: &str, path: &str, hub: Hub) -> std::io::Result<()> {
    init_logging();
    let addr = listen_addr(5000);
    let listener = TcpListener::bind(addr).await?;
    println!("{name} example: http://{addr}{path} (Ctrl-C to stop)");
    signalr_core::serve_with_shutdown(listener, path, hub, signalr_core::shutdown_signal()).await
}

/// Sends one HTTP/1.1 request with no body over a fresh socket (as a client's negotiate does)
/// and returns the status code and body. The examples' tests use it to prove that the served
/// example answers.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path_and_query} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

/// Negotiates at the hub mounted at `hub_path` (`extra_query` such as
/// `&useStatefulReconnect=true`): the status code and body.
pub async fn negotiate(
    addr: SocketAddr,
    hub_path: &str,
    extra_query: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let path = format!("{hub_path}/negotiate?negotiateVersion=1{extra_query}");
    request(addr, "POST", &path, headers).await
}

/// Serves `hub` at `path` on a free loopback port for as long as the calling runtime runs (a
/// test's); returns the address.
pub async fn serve_on_free_port(path: &'static str, hub: Hub) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("a bound address");
    let pending = std::future::pending();
    tokio::spawn(signalr_core::serve_with_shutdown(
        listener, path, hub, pending,
    ));
    addr
}

/// Like [`serve_on_free_port`], for an axum application with the hub mounted inside.
pub async fn serve_app_on_free_port(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Panics unless the hub at `hub_path` answers an anonymous negotiate with 200 and a
/// connection token, as the JS client expects.
pub async fn assert_negotiates(addr: SocketAddr, hub_path: &str) {
    let (status, body) = negotiate(addr, hub_path, "", &[])
        .await
        .expect("a response");
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert!(body["connectionToken"].is_string(), "{body}");
}
