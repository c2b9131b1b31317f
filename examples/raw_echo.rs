//! A raw connection endpoint (`MapConnectionHandler` in ASP.NET Core): negotiate and the three
//! transports, no handshake and no hub protocol; whatever a client sends comes back, text as
//! text.
//!
//! ```text
//! cargo run --example raw_echo        # listens on 127.0.0.1:5000 (PORT to change), at /echo
//! ```
//! The official JS client's `HttpConnection` speaks to it (not exported from the package's
//! index; require it from `@microsoft/signalr/dist/cjs/HttpConnection`):
//! ```js
//! const c = new HttpConnection("http://127.0.0.1:5000/echo");
//! c.onreceive = (data) => console.log("got", data);
//! await c.start(signalR.TransferFormat.Text);
//! await c.send("hello");
//! ```

use signalr_core::ConnectionHandler;

fn echo() -> ConnectionHandler {
    ConnectionHandler::new(|mut connection| async move {
        tracing::info!(connection = connection.connection_id(), transport = ?connection.transport(), "connected");
        while let Some(data) = connection.recv().await {
            if connection.send(data).await.is_err() {
                break;
            }
        }
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_examples::init_logging();
    let addr = signalr_examples::listen_addr(5000);
    let app: axum::Router = axum::Router::new().nest_service("/echo", echo().service());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("raw echo example: http://{addr}/echo (Ctrl-C to stop)");
    axum::serve(listener, app)
        .with_graceful_shutdown(signalr_core::shutdown_signal())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    #[tokio::test]
    async fn what_a_websocket_client_sends_comes_back_as_text() {
        let app: axum::Router = axum::Router::new().nest_service("/echo", echo().service());
        let addr = signalr_examples::serve_app_on_free_port(app).await;
        signalr_examples::assert_negotiates(addr, "/echo").await;
        // No handshake: the first message is already the application's.
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/echo"))
            .await
            .unwrap();
        for text in ["hello", "no \u{1e} separator needed"] {
            socket.send(Message::text(text)).await.unwrap();
            match socket.next().await.unwrap().unwrap() {
                Message::Text(echoed) => assert_eq!(echoed.as_str(), text),
                other => panic!("expected text, got {other:?}"),
            }
        }
    }
}
