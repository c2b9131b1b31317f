//! A minimal chat server on `signalr-core` alone, in memory: rooms are groups, the hub lives
//! inside an axum app next to a REST endpoint that reads presence and pushes through the hub
//! context. (The full service, with accounts and history, is the `chat-app` crate.)
//!
//! ```text
//! cargo run --example chat        # http://127.0.0.1:5000, hub at /hubs/chat
//! ```
//! From Node with `@microsoft/signalr`:
//! ```js
//! const c = new signalR.HubConnectionBuilder().withUrl("http://127.0.0.1:5000/hubs/chat").build();
//! c.on("ReceiveMessage", (room, from, text) => console.log(`[${room}] ${from}: ${text}`));
//! await c.start();
//! await c.invoke("SetName", "alice");
//! await c.invoke("JoinRoom", "general");
//! await c.invoke("SendMessage", "general", "hello");
//! ```
//! And over HTTP: `curl localhost:5000/rooms/general` (who is there) or
//! `curl -XPOST localhost:5000/rooms/general/announce -d 'maintenance at noon'`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use signalr_core::{Context, Hub, HubContext, HubError};

/// Display names by connection id: the only state this server keeps.
type Names = Arc<Mutex<HashMap<String, String>>>;

fn name_of(names: &Names, ctx: &Context) -> String {
    let names = names.lock().unwrap();
    names
        .get(ctx.connection_id())
        .cloned()
        .unwrap_or_else(|| "anonymous".into())
}

async fn join_room(names: Names, ctx: Context, room: String) -> Result<(), HubError> {
    if room.trim().is_empty() {
        return Err(HubError::new("Room names cannot be empty."));
    }
    ctx.groups().add(ctx.connection_id(), &room).await?;
    let who = name_of(&names, &ctx);
    ctx.clients()
        .others_in_group(room.clone())
        .send("UserJoined", (room, who))
        .await?;
    Ok(())
}

async fn send_message(
    names: Names,
    ctx: Context,
    room: String,
    text: String,
) -> Result<(), HubError> {
    if !ctx
        .hub()
        .presence()
        .local_connection_groups(ctx.connection_id())
        .contains(&room)
    {
        return Err(HubError::new("Join the room first."));
    }
    let who = name_of(&names, &ctx);
    ctx.clients()
        .group(room.clone())
        .send("ReceiveMessage", (room, who, text))
        .await?;
    Ok(())
}

/// `GET /rooms/{room}`: the connections in a room and their names.
async fn room_members(State(app): State<App>, Path(room): Path<String>) -> Json<Vec<String>> {
    let names = app.names.lock().unwrap();
    let members = app.hub.presence().local_group_members(&room);
    Json(
        members
            .iter()
            .map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone()))
            .collect(),
    )
}

/// `POST /rooms/{room}/announce`: the body goes to everyone in the room, from outside the hub.
async fn announce(State(app): State<App>, Path(room): Path<String>, text: String) -> &'static str {
    let _ = app
        .hub
        .clients()
        .group(room.clone())
        .send("ReceiveMessage", (room, "server", text))
        .await;
    "sent"
}

#[derive(Clone)]
struct App {
    hub: HubContext,
    names: Names,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let names = Names::default();
    let (n1, n2, n3, n4) = (names.clone(), names.clone(), names.clone(), names.clone());
    let hub = Hub::builder()
        .method("SetName", move |ctx: Context, name: String| {
            let names = n1.clone();
            async move {
                names
                    .lock()
                    .unwrap()
                    .insert(ctx.connection_id().to_owned(), name);
            }
        })
        .method("JoinRoom", move |ctx: Context, room: String| {
            join_room(n2.clone(), ctx, room)
        })
        .method(
            "SendMessage",
            move |ctx: Context, room: String, text: String| {
                send_message(n3.clone(), ctx, room, text)
            },
        )
        .on_disconnected(move |ctx: Context, _error: Option<String>| {
            let names = n4.clone();
            async move {
                names.lock().unwrap().remove(ctx.connection_id());
            }
        })
        .build();

    let app = Router::new()
        .route("/rooms/{room}", get(room_members))
        .route("/rooms/{room}/announce", post(announce))
        .nest_service("/hubs/chat", hub.service())
        .with_state(App {
            hub: hub.context(),
            names,
        });

    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("chat example on http://{addr} (hub at /hubs/chat)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            signalr_core::shutdown_signal().await;
            hub.shutdown().await;
        })
        .await
}
