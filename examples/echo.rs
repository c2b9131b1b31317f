//! A minimal hub: `Echo` answers the caller, `Broadcast` reaches everyone, and a timer pushes
//! the time to all clients from outside the hub.
//!
//! ```text
//! cargo run --example echo            # listens on 127.0.0.1:5000, hub at /echo
//! ```
//! Connect with any SignalR client, for example from Node:
//! ```js
//! const c = new signalR.HubConnectionBuilder().withUrl("http://127.0.0.1:5000/echo").build();
//! c.on("Broadcast", (from, text) => console.log(from, text));
//! await c.start();
//! console.log(await c.invoke("Echo", "hello"));
//! await c.invoke("Broadcast", "hi all");
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signalr_core::{Clients, Context, Hub, HubError};

/// Returns its argument: the result reaches the caller as the invocation's result.
async fn echo(message: String) -> String {
    message
}

/// Sends the message to every connected client, tagged with the sender's connection id.
async fn broadcast(context: Context, clients: Clients, text: String) -> Result<(), HubError> {
    if text.trim().is_empty() {
        // A HubError's message is shown to the caller.
        return Err(HubError::new("Empty messages are not broadcast."));
    }
    clients
        .all()
        .send("Broadcast", (context.connection_id(), text))
        .await?;
    Ok(())
}

fn hub() -> Hub {
    Hub::builder()
        .method("Echo", echo)
        .method("Broadcast", broadcast)
        .on_connected(|context: Context| async move {
            tracing::info!(connection = context.connection_id(), "connected");
        })
        .on_disconnected(|context: Context, error: Option<String>| async move {
            tracing::info!(connection = context.connection_id(), ?error, "disconnected");
        })
        .build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let hub = hub();

    // Pushing from outside the hub: a timer with a HubContext handle.
    let context = hub.context();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(10));
        loop {
            ticker.tick().await;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let _ = context.clients().all().send("Time", (now,)).await;
        }
    });

    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("echo hub listening on http://{addr}/echo (Ctrl-C to stop)");
    signalr_core::serve(listener, "/echo", hub).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalr_core::test_util::TestClient;

    #[tokio::test(start_paused = true)]
    async fn echo_answers_the_caller_and_broadcast_reaches_everyone() {
        let hub = hub();
        let mut alice = TestClient::connect(&hub).await.unwrap();
        let mut bob = TestClient::connect(&hub).await.unwrap();
        let echoed: String = alice.invoke("Echo", ("hello",)).await.unwrap();
        assert_eq!(echoed, "hello");
        alice.invoke::<()>("Broadcast", ("hi all",)).await.unwrap();
        for client in [&mut alice, &mut bob] {
            let (target, args) = client.recv_invocation().await.unwrap();
            assert_eq!(target, "Broadcast");
            assert_eq!(args[1].deserialize::<String>().unwrap(), "hi all");
        }
        assert_eq!(
            bob.invoke::<()>("Broadcast", ("  ",)).await,
            Err("An unexpected error occurred invoking 'Broadcast' on the server. HubException: Empty messages are not broadcast.".to_owned())
        );
    }

    #[tokio::test]
    async fn the_served_example_answers_negotiate() {
        let addr = signalr_examples::serve_on_free_port("/echo", hub()).await;
        signalr_examples::assert_negotiates(addr, "/echo").await;
    }
}
