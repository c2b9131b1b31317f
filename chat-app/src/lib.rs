#![forbid(unsafe_code)]
//! The chat service: rooms with persistent membership and history (SQLite or PostgreSQL), a
//! REST API, health endpoints, and the `/hubs/chat` SignalR hub, all in one axum app.
//!
//! Run it with `cargo run --release -p chat-app`; see [`config`] for every setting. With
//! `REDIS_URL` set, several processes on one database serve as one service (the hub scales out
//! over the Redis backplane of `signalr-redis`); `/health/ready` then reports Redis too.

pub mod api;
pub mod assistant;
pub mod auth;
pub mod config;
pub mod hub;
pub mod store;

use std::sync::{Arc, OnceLock};

use axum::routing::{get, post};
use axum::Router;
use signalr_core::HubContext;

use crate::auth::Tokens;
use crate::config::Config;
use crate::store::Store;

/// The assistant's user name, as mentioned (`@gpt`) and as shown on its replies.
pub const ASSISTANT_NAME: &str = "gpt";

/// The SignalR group of a room.
pub fn room_group(room_id: i64) -> String {
    format!("room:{room_id}")
}

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub tokens: Tokens,
    pub max_message_chars: usize,
    pub assistant: assistant::Assistant,
    /// The assistant's account (`gpt`), author of its replies.
    pub assistant_user: i64,
    hub_context: Arc<OnceLock<HubContext>>,
    pub hub: HubHandle,
}

/// The hub context, available once the hub is built (the hub's methods need the state first).
#[derive(Clone)]
pub struct HubHandle(Arc<OnceLock<HubContext>>);

impl std::ops::Deref for HubHandle {
    type Target = HubContext;
    fn deref(&self) -> &HubContext {
        self.0
            .get()
            .expect("the hub is built before the app serves")
    }
}

/// Builds the whole service: connects the store (applying migrations) and wires the routes.
pub async fn build(config: &Config) -> Result<(Router, signalr_core::Hub), String> {
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| format!("cannot open the database {}: {e}", config.database_url))?;
    let assistant_user = store
        .system_user(ASSISTANT_NAME)
        .await
        .map_err(|e| format!("cannot create the assistant's account: {e}"))?;
    let provider = config.openai.as_ref().map(|openai| {
        Arc::new(assistant::OpenAiProvider::new(
            &openai.base_url,
            &openai.api_key,
            &openai.model,
            config.assistant_timeout,
        )) as Arc<dyn assistant::Provider>
    });
    let slot = Arc::new(OnceLock::new());
    let state = AppState {
        store,
        tokens: Tokens::new(&config.jwt_secret, config.token_lifetime_minutes),
        max_message_chars: config.max_message_chars,
        assistant: assistant::Assistant::new(provider, config.assistant.clone()),
        assistant_user,
        hub_context: slot.clone(),
        hub: HubHandle(slot.clone()),
    };
    let backplane = match &config.redis {
        // On a Redis Cluster (REDIS_CLUSTER=true), sharded channels: each message goes to the
        // shard that owns its channel instead of to every node.
        Some(redis) => Some(
            signalr_redis::RedisBackplane::builder(
                redis.url.as_str(),
                redis.channel_prefix.as_str(),
            )
            .cluster(redis.cluster)
            .sharded(redis.cluster)
            .connect()
            .await
            .map_err(|e| format!("cannot start the Redis backplane at {}: {e}", redis.url))?,
        ),
        None => None,
    };
    let hub = hub::build(&state, backplane);
    let _ = state.hub_context.set(hub.context());
    let app = Router::new()
        .route("/api/v1/auth/register", post(api::register))
        .route("/api/v1/auth/login", post(api::login))
        .route("/api/v1/rooms", get(api::rooms).post(api::create_room))
        .route("/api/v1/rooms/{id}/messages", get(api::messages))
        .route(
            "/api/v1/rooms/{id}/participants",
            post(api::add_participant),
        )
        .route("/health", get(api::health))
        .route("/health/live", get(api::live))
        .route("/health/ready", get(api::ready))
        .nest_service("/hubs/chat", hub.service())
        .fallback(api::not_found)
        .with_state(state);
    Ok((app, hub))
}
