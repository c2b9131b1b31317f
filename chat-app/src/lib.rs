#![forbid(unsafe_code)]
//! The chat service: rooms with persistent membership and history (SQLite or PostgreSQL), a
//! REST API, health endpoints, `/metrics` (Prometheus; see [`observe`]), and the `/hubs/chat`
//! SignalR hub, all in one axum app.
//!
//! Run it with `cargo run --release -p chat-app`; see [`config`] for every setting. With
//! `REDIS_URL` set, several processes on one database serve as one service (the hub scales out
//! over the Redis backplane of `signalr-redis`); `/health/ready` then reports Redis too.

pub mod accounts;
pub mod api;
pub mod assistant;
pub mod auth;
pub mod clients;
pub mod config;
pub mod hub;
pub mod limits;
pub mod messaging;
pub mod observe;
pub mod secrets;
pub mod store;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::auth::Tokens;
use crate::clients::ChatHub;
use crate::store::Store;

/// The assistant's user name, as mentioned (`@gpt`) and as shown on its replies.
pub const ASSISTANT_NAME: &str = "gpt";

/// `\r\n` and lone `\r` as `\n`, so that line breaks are one character on every client.
pub fn normalize_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Control characters other than tab and line feed (NUL included): refused in what users
/// write, so every database stores the same things.
pub fn has_control_characters(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// The SignalR group of a room.
pub fn room_group(room_id: i64) -> String {
    format!("room:{room_id}")
}

/// What the hub's methods and the REST handlers share (the hub's `with_state`).
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub tokens: Tokens,
    pub max_message_chars: usize,
    pub assistant: assistant::Assistant,
    /// The assistant's account (`gpt`), author of its replies.
    pub assistant_user: i64,
    /// Every rate limit and throttle (shared through Redis with a backplane).
    pub limiter: limits::Limiter,
    pub rates: config::Rates,
    pub hasher: accounts::Hasher,
    pub stateful_reconnect: bool,
    pub disconnect_timeout: Duration,
}

/// The REST handlers' state: the app state and the hub they announce changes through. Made
/// after the hub is built, so the hub is always there; handlers take `State<AppState>` and
/// `State<ChatHub>`.
#[derive(Clone)]
pub struct Service {
    pub state: AppState,
    pub hub: ChatHub,
    /// `GET /metrics`.
    pub metrics: observe::MetricsEndpoint,
}

impl FromRef<Service> for AppState {
    fn from_ref(service: &Service) -> AppState {
        service.state.clone()
    }
}

impl FromRef<Service> for ChatHub {
    fn from_ref(service: &Service) -> ChatHub {
        service.hub.clone()
    }
}

/// Runs `attempt` up to `attempts` times, 1 s apart and doubling up to 8 s, logging each
/// failure with its reason; the last failure is returned.
pub async fn with_retries<T, E, F, Fut>(
    what: &str,
    attempts: u32,
    describe: impl Fn(&E) -> String,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_secs(1);
    let mut tried = 0;
    loop {
        tried += 1;
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if tried >= attempts => return Err(error),
            Err(error) => {
                tracing::warn!(
                    "{what}: {} (attempt {tried} of {attempts}); retrying in {} s",
                    describe(&error),
                    delay.as_secs()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
        }
    }
}

/// Builds the whole service: connects the store (applying migrations) and wires the routes.
/// Errors are one line without secrets.
pub async fn build(config: &config::Config) -> Result<(Router, signalr_core::Hub), String> {
    let jwt_secret = config
        .jwt_secret
        .as_ref()
        .ok_or("no JWT secret (Config::load provides one)")?;
    let database = secrets::redact_url(&config.database_url);
    let store = with_retries(
        &format!("cannot reach the database at {database}"),
        config.database_connect_attempts,
        store::describe,
        || Store::connect(&config.database_url, config.database_acquire_timeout),
    )
    .await
    .map_err(|e| {
        format!(
            "cannot open the database at {database}: {} (tried {} times; DATABASE_CONNECT_ATTEMPTS sets how often)",
            store::describe(&e),
            config.database_connect_attempts
        )
    })?;
    let assistant_user = store.system_user(ASSISTANT_NAME).await.map_err(|e| {
        format!(
            "cannot create the assistant's account: {}",
            store::describe(&e)
        )
    })?;
    let provider = config.openai.as_ref().map(|openai| {
        Arc::new(assistant::OpenAiProvider::new(
            &openai.base_url,
            openai.api_key.expose(),
            &openai.model,
            config.assistant_timeout,
            openai.stream_usage,
        )) as Arc<dyn assistant::Provider>
    });
    // Before the hub is built, so that its first connections are counted.
    let metrics = observe::MetricsEndpoint::new(&config.metrics, store.clone());
    let limiter = match &config.redis {
        Some(redis) => limits::Limiter::redis(&redis.url, &redis.channel_prefix)?,
        None => limits::Limiter::local(),
    };
    let hasher = accounts::Hasher::new(config.password_hash_concurrency, 64)
        .await
        .map_err(|_| "cannot initialise password hashing".to_owned())?;
    let state = AppState {
        store,
        tokens: Tokens::new(jwt_secret.expose(), config.token_lifetime_minutes),
        max_message_chars: config.max_message_chars,
        assistant: assistant::Assistant::new(provider, config.assistant.clone()),
        assistant_user,
        limiter,
        rates: config.rates,
        hasher,
        stateful_reconnect: config.stateful_reconnect,
        disconnect_timeout: config.disconnect_timeout,
    };
    let backplane = match &config.redis {
        Some(redis) => {
            let shown = secrets::redact_url(&redis.url);
            let password = secrets::url_password(&redis.url).unwrap_or_default();
            let scrubbed = |e: &String| secrets::scrub(e, &[&password]);
            let connected = with_retries(
                &format!("cannot reach Redis at {shown}"),
                config.database_connect_attempts,
                scrubbed,
                || async {
                    // On a Redis Cluster (REDIS_CLUSTER=true), sharded channels: each message
                    // goes to the shard that owns its channel instead of to every node.
                    let connecting = signalr_redis::RedisBackplane::builder(
                        redis.url.as_str(),
                        redis.channel_prefix.as_str(),
                    )
                    .cluster(redis.cluster)
                    .sharded(redis.cluster)
                    .connect();
                    match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                        Ok(result) => result.map_err(|e| e.to_string()),
                        Err(_) => Err("no answer within 5 s".to_owned()),
                    }
                },
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot start the Redis backplane at {shown}: {}",
                    scrubbed(&e)
                )
            })?;
            Some(connected)
        }
        None => None,
    };
    let hub = hub::build(state.clone(), backplane);
    let service = Service {
        state,
        hub: ChatHub::new(&hub.context()),
        metrics,
    };
    let app = Router::new()
        .route("/api/v1/auth/register", post(api::register))
        .route("/api/v1/auth/login", post(api::login))
        .route("/api/v1/rooms", get(api::rooms).post(api::create_room))
        .route("/api/v1/rooms/{id}/messages", get(api::messages))
        .route(
            "/api/v1/rooms/{id}/participants",
            get(api::participants).post(api::add_participant),
        )
        .route(
            "/api/v1/rooms/{id}/participants/{user_id}",
            delete(api::remove_participant),
        )
        .route("/health", get(api::health))
        .route("/health/live", get(api::live))
        .route("/health/ready", get(api::ready))
        .route("/metrics", get(observe::metrics))
        .merge(messaging::routes())
        .merge(web::routes())
        .nest_service("/hubs/chat", hub.service())
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(service);
    // The hub's mount point (as given to `nest_service` above) labels its requests.
    Ok((observe::instrument(app, &["/hubs/chat"]), hub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn start_up_retries_back_off_then_give_up_with_the_last_error() {
        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let result: Result<(), String> = with_retries(
            "the database",
            5,
            |e: &String| e.clone(),
            || {
                calls += 1;
                let call = calls;
                async move { Err(format!("refused #{call}")) }
            },
        )
        .await;
        assert_eq!(result, Err("refused #5".to_owned()));
        assert_eq!(calls, 5);
        // 1 + 2 + 4 + 8 s between the five attempts.
        assert_eq!(started.elapsed(), Duration::from_secs(15));

        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let result = with_retries(
            "the database",
            5,
            |e: &String| e.clone(),
            || {
                calls += 1;
                let call = calls;
                async move {
                    if call < 3 {
                        Err("not yet".to_owned())
                    } else {
                        Ok(call)
                    }
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[test]
    fn control_characters_are_refused_except_tabs_and_line_breaks() {
        assert!(has_control_characters("nul\0byte"));
        assert!(has_control_characters("bell\u{7}"));
        assert!(has_control_characters("c1\u{85}"));
        assert!(!has_control_characters("tab\tand\nnewline"));
        assert_eq!(normalize_newlines("a\r\nb\rc"), "a\nb\nc");
    }
}
