//! An axum application with a hub inside, served with the HTTP-level limits that
//! `axum::serve` lacks: `serve_service` gives the whole application the request headers and
//! keep-alive timeouts, the connection caps, the body limit and the minimum body data rate
//! of `ServeOptions`, and
//! per-route tower-http layers narrow them where a route needs less.
//!
//! ```text
//! cargo run --example limits     # http://127.0.0.1:5000 (PORT to change), hub at /hubs/echo
//! ```
//! `GET /api/time` is an ordinary REST route behind a 10 s `TimeoutLayer`. The hub is not:
//! a timeout layer would cut its Server-Sent Events streams and long polls (and could not
//! stop a WebSocket, which outlives its request); the hub bounds those with its own timers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use signalr_core::{Hub, MinDataRate, ServeOptions};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

const HUB_PATH: &str = "/hubs/echo";

/// What a hub client may POST at once (long polling, Server-Sent Events): a few messages.
/// The server-wide limit stays larger for the application's own uploads.
const HUB_BODY_LIMIT: usize = 64 * 1024;

async fn echo(text: String) -> String {
    text
}

async fn time() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs().to_string()
}

fn app(hub: &Hub) -> Router {
    // REST routes may have a deadline; the hub's routes must not (see the module docs).
    let api = Router::new()
        .route("/api/time", get(time))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ));
    let hub_routes = Router::new()
        .nest_service(HUB_PATH, hub.service())
        .layer(RequestBodyLimitLayer::new(HUB_BODY_LIMIT));
    api.merge(hub_routes)
}

/// The defaults (documented on `ServeOptions`), with a tighter header timeout, a cap per
/// client address (this example expects clients to connect directly, not through a proxy)
/// and bodies that must keep coming at 1 KiB/s once their first 5 s are over.
fn options() -> ServeOptions {
    ServeOptions::default()
        .request_headers_timeout(Duration::from_secs(10))
        .max_connections_per_ip(100)
        .max_request_body_size(8 * 1024 * 1024)
        .min_request_body_data_rate(MinDataRate::new(1024.0, Duration::from_secs(5)))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_examples::init_logging();
    let hub = Hub::builder().method("Echo", echo).build();
    let app = app(&hub);
    let addr = signalr_examples::listen_addr(5000);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("limits example: http://{addr}{HUB_PATH} (Ctrl-C to stop)");
    // The hub says goodbye to its clients before the server stops accepting.
    let signal = async move {
        signalr_core::shutdown_signal().await;
        hub.shutdown().await;
    };
    signalr_core::serve_service(listener, app, options(), signal).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn start(options: ServeOptions) -> SocketAddr {
        let hub = Hub::builder().method("Echo", echo).build();
        let app = app(&hub);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pending = std::future::pending();
        tokio::spawn(signalr_core::serve_service(listener, app, options, pending));
        addr
    }

    /// Writes `request` on a fresh connection and reads until the server closes it.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response));
        let _ = read.await.unwrap_or_else(|_| {
            panic!(
                "no close in time; so far: {:?}",
                String::from_utf8_lossy(&response)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )
        });
        String::from_utf8_lossy(&response).into_owned()
    }

    #[tokio::test]
    async fn the_application_and_its_hub_are_served_within_the_limits() {
        let addr = start(
            options()
                .request_headers_timeout(Duration::from_secs(1))
                .min_request_body_data_rate(MinDataRate::new(1024.0, Duration::from_secs(1))),
        )
        .await;
        signalr_examples::assert_negotiates(addr, HUB_PATH).await;
        let (status, body) = signalr_examples::request(addr, "GET", "/api/time", &[])
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert!(body.parse::<u64>().is_ok(), "{body}");

        // A hub POST past the hub's own limit: by its declared length (tower-http answers),
        // and chunked, once it grows past it (the hub answers, in JSON).
        let (status, _) = signalr_examples::negotiate(addr, HUB_PATH, "", &[])
            .await
            .unwrap();
        assert_eq!(status, 200);
        let declared = format!(
            "POST {HUB_PATH}?id=x HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            HUB_BODY_LIMIT + 1
        );
        let answer = exchange(addr, declared.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

        let token = negotiated_token(addr).await;
        let poll =
            format!("GET {HUB_PATH}?id={token} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert!(exchange(addr, poll.as_bytes())
            .await
            .starts_with("HTTP/1.1 200"));
        let mut chunked = format!(
            "POST {HUB_PATH}?id={token} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        let handshake = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
        let pings = format!("{handshake}{}", "{\"type\":6}\u{1e}".repeat(8 * 1024));
        chunked.extend_from_slice(format!("{:x}\r\n{pings}\r\n0\r\n\r\n", pings.len()).as_bytes());
        let answer = exchange(addr, &chunked).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.ends_with(r#"{"error":"The request body is too large."}"#),
            "{answer}"
        );

        // A body that stops coming gets 408 once the grace period is over.
        let token = negotiated_token(addr).await;
        let stalled = format!(
            "POST {HUB_PATH}?id={token} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
        );
        let started = std::time::Instant::now();
        let answer = exchange(addr, stalled.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(started.elapsed() >= Duration::from_secs(1));

        // A connection that never sends a request is closed after the headers timeout.
        let started = std::time::Instant::now();
        assert_eq!(exchange(addr, b"").await, "");
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    async fn negotiated_token(addr: SocketAddr) -> String {
        let (_, body) = signalr_examples::negotiate(addr, HUB_PATH, "", &[])
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        body["connectionToken"].as_str().unwrap().to_owned()
    }
}
