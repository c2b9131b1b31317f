//! Two (or more) processes as one hub over the Redis backplane.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 LISTEN_ADDR=127.0.0.1:5001 cargo run --example scaleout
//! REDIS_URL=redis://127.0.0.1:6379 LISTEN_ADDR=127.0.0.1:5002 cargo run --example scaleout
//! ```
//! Connect one client to each (`http://127.0.0.1:5001/hub`, `http://127.0.0.1:5002/hub`):
//! `Broadcast("hi")` through either reaches both, `JoinGroup`/`SendToGroup` work across them,
//! and `OnlineCount()` counts the connections of every process. `GET /health` shows whether the
//! backplane is connected; stop Redis and watch local delivery continue while cross-process
//! sends report the outage, then recover when Redis returns.

use axum::routing::get;
use axum::{Json, Router};
use signalr_core::{Clients, Context, Hub, HubContext, HubError};
use signalr_redis::RedisBackplane;

async fn broadcast(ctx: Context, clients: Clients, text: String) -> Result<(), HubError> {
    // Local clients are served at once; the others through Redis. With Redis down, the local
    // part still happens and the error says the rest did not.
    clients
        .all()
        .send("Broadcast", (ctx.connection_id(), text))
        .await?;
    Ok(())
}

async fn join_group(ctx: Context, group: String) -> Result<(), HubError> {
    ctx.groups().add(ctx.connection_id(), &group).await?;
    Ok(())
}

async fn send_to_group(clients: Clients, group: String, text: String) -> Result<(), HubError> {
    clients
        .group(group.clone())
        .send("Group", (group, text))
        .await?;
    Ok(())
}

/// Connections on every process, from the backplane's presence records.
async fn online_count(hub: HubContext) -> Result<usize, HubError> {
    Ok(hub.presence().group_size("lobby").await?)
}

async fn on_connected(ctx: Context) -> Result<(), HubError> {
    // Everyone is in the lobby, so OnlineCount can count them across processes.
    ctx.groups().add(ctx.connection_id(), "lobby").await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:5001".into());
    // Every process of one hub uses the same channel prefix.
    let backplane = RedisBackplane::connect(redis.as_str(), "Examples.ScaleOutHub").await?;
    let health = backplane.clone();
    let hub = Hub::builder()
        .backplane(backplane)
        .on_connected(on_connected)
        .method("Broadcast", broadcast)
        .method("JoinGroup", join_group)
        .method("SendToGroup", send_to_group)
        .method("OnlineCount", online_count)
        .build();
    let app = Router::new().nest_service("/hub", hub.service()).route(
        "/health",
        get(move || {
            let health = health.clone();
            async move {
                Json(serde_json::json!({
                    "backplane": health.is_healthy(),
                    "server": health.server_name(),
                    "stats": format!("{:?}", health.stats()),
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("scale-out example on http://{addr}/hub (Redis {redis})");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            signalr_core::shutdown_signal().await;
            hub.shutdown().await;
        })
        .await?;
    Ok(())
}
