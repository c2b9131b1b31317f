//! Typed clients (`Hub<T>` in ASP.NET Core): the methods a client offers are declared once
//! with `client_methods!`, and every send, from a method or from outside the hub, is checked
//! by the compiler.
//!
//! ```text
//! cargo run --example typed_clients   # listens on 127.0.0.1:5000 (PORT to change), hub at /room
//! ```
//! ```js
//! const c = new signalR.HubConnectionBuilder().withUrl("http://127.0.0.1:5000/room").build();
//! c.on("ReceiveMessage", (user, text) => console.log(`${user}: ${text}`));
//! c.on("Tick", (count) => console.log("tick", count));
//! await c.start();
//! await c.invoke("Say", "ada", "hello");
//! ```

use std::time::Duration;

use signalr_core::{client_methods, Hub, HubError, TypedClients};

client_methods! {
    /// What a room client can be sent; each variant is a client method of that name.
    #[derive(Debug, Clone)]
    pub enum RoomClient {
        /// A message from `user`.
        ReceiveMessage { user: String, text: String },
        /// The server's heartbeat, from a timer outside the hub.
        Tick { count: u64 },
    }
}

/// Everyone gets the message; a wrong argument here would not compile.
async fn say(
    clients: TypedClients<RoomClient>,
    user: String,
    text: String,
) -> Result<(), HubError> {
    if text.is_empty() {
        return Err(HubError::new("Say something."));
    }
    clients
        .all()
        .send(RoomClient::ReceiveMessage { user, text })
        .await?;
    Ok(())
}

fn hub() -> Hub {
    Hub::builder().method("Say", say).build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let hub = hub();
    // From outside a method: the same declarations through a typed hub context.
    let room = hub.context().typed::<RoomClient>();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        for count in 0.. {
            ticker.tick().await;
            let _ = room.all().send(RoomClient::Tick { count }).await;
        }
    });
    signalr_examples::serve_example("typed clients", "/room", hub).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalr_core::protocol::Protocol;
    use signalr_core::test_util::TestClient;

    #[tokio::test]
    async fn say_reaches_everyone_with_the_declared_method_and_arguments() {
        let hub = hub();
        for protocol in [Protocol::Json, Protocol::MessagePack] {
            let mut ada = TestClient::builder()
                .protocol(protocol)
                .connect(&hub)
                .await
                .unwrap();
            let mut bob = TestClient::builder()
                .protocol(protocol)
                .connect(&hub)
                .await
                .unwrap();
            ada.invoke::<()>("Say", ("ada", "hello")).await.unwrap();
            for client in [&mut ada, &mut bob] {
                let (target, args) = client.recv_invocation().await.unwrap();
                assert_eq!(target, "ReceiveMessage");
                assert_eq!(args[0].deserialize::<String>().unwrap(), "ada");
                assert_eq!(args[1].deserialize::<String>().unwrap(), "hello");
            }
            assert!(bob.invoke::<()>("Say", ("bob", "")).await.is_err());
            ada.close().await;
            bob.close().await;
        }
    }

    #[tokio::test]
    async fn a_typed_hub_context_reaches_clients_from_outside_the_hub() {
        let hub = hub();
        let mut client = TestClient::connect(&hub).await.unwrap();
        hub.context()
            .typed::<RoomClient>()
            .client(client.connection_id())
            .send(RoomClient::Tick { count: 3 })
            .await
            .unwrap();
        let (target, args) = client.recv_invocation().await.unwrap();
        assert_eq!(target, "Tick");
        assert_eq!(args[0].deserialize::<u64>().unwrap(), 3);
    }

    #[tokio::test]
    async fn the_served_example_answers_negotiate() {
        let addr = signalr_examples::serve_on_free_port("/room", hub()).await;
        signalr_examples::assert_negotiates(addr, "/room").await;
    }
}
