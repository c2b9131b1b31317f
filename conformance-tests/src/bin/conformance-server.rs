//! The hub that the conformance suites drive with real clients.
//!
//! Binds 127.0.0.1 on a free port and prints `LISTENING <port>` once ready. The hub is mounted
//! at `/hub` inside an axum router (which also proves embedding), next to two admin routes:
//! `POST /admin/broadcast {"method": ..., "args": [...]}` pushes to every client through the
//! hub context, `GET /admin/disconnected` lists `[connectionId, error]` for every connection
//! whose `on_disconnected` ran, and `POST /admin/shutdown` shuts down gracefully, as SIGTERM
//! and Ctrl-C do.
//!
//! Options: `--keep-alive-ms N`, `--client-timeout-ms N`, `--handshake-timeout-ms N`,
//! `--max-message-size N`, `--long-poll-timeout-ms N`, `--detailed-errors`,
//! `--transports ws,sse,lp` (which transports to serve; default all), `--jwt-secret S` (accept
//! HS256 bearer tokens signed with S), `--require-auth` (refuse anonymous callers).
//!
//! Groups, users and presence: `JoinGroup`, `LeaveGroup`, `SendToGroup`, `SendToGroups`,
//! `SendToGroupExcept`, `SendToOthersInGroup`, `SendToUser`, `SendToUsers`, `WhoAmI`,
//! `OnlineUsers`, `UserConnections`, `GroupMembers`, `GroupSize`; `AdminOnly` requires the claim
//! `role=admin`. A filter rejects `Blocked` before its body runs (`BlockedRuns` counts bodies)
//! and counts calls to methods that do not exist (`UnknownCalls`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use signalr_core::protocol::Payload;
use std::sync::atomic::{AtomicUsize, Ordering};

use signalr_core::auth::JwtAuthenticator;
use signalr_core::{
    filter_fn, Clients, Context, Hub, HubContext, HubError, HubInvocation, InvocationOutcome,
    InvokeNext, Policy, TransportKind,
};
use tokio::sync::Notify;

async fn echo(value: Payload) -> Payload {
    value
}

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

async fn describe(s: String, n: i64, b: bool) -> String {
    format!("{s}|{n}|{b}")
}

async fn void() {}

async fn throw(message: String) -> Result<(), HubError> {
    Err(HubError::new(message))
}

async fn fail() -> Result<(), HubError> {
    let parsed: Result<u32, _> = "not a number".parse::<u32>();
    parsed?;
    Ok(())
}

async fn fire(clients: Clients, value: Payload) -> Result<(), signalr_core::Error> {
    clients.caller().send("Fired", (value,)).await
}

async fn get_connection_id(context: Context) -> String {
    context.connection_id().to_owned()
}

async fn send_to_caller(
    clients: Clients,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.caller().send(&method, args).await
}

async fn send_to_all(
    clients: Clients,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.all().send(&method, args).await
}

async fn send_to_others(
    clients: Clients,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.others().send(&method, args).await
}

async fn send_to_client(
    clients: Clients,
    connection_id: String,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.client(connection_id).send(&method, args).await
}

async fn send_to_clients(
    clients: Clients,
    connection_ids: Vec<String>,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.clients(connection_ids).send(&method, args).await
}

async fn get_transport(context: Context) -> &'static str {
    context.transport().as_str()
}

async fn join_group(context: Context, group: String) -> Result<(), signalr_core::Error> {
    context.groups().add(context.connection_id(), &group).await
}

async fn leave_group(context: Context, group: String) -> Result<(), signalr_core::Error> {
    context
        .groups()
        .remove(context.connection_id(), &group)
        .await
}

async fn send_to_group(
    clients: Clients,
    group: String,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.group(group).send(&method, args).await
}

async fn send_to_groups(
    clients: Clients,
    groups: Vec<String>,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.groups(groups).send(&method, args).await
}

async fn send_to_group_except(
    clients: Clients,
    group: String,
    excluded: Vec<String>,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients
        .group_except(group, excluded)
        .send(&method, args)
        .await
}

async fn send_to_others_in_group(
    clients: Clients,
    group: String,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.others_in_group(group).send(&method, args).await
}

async fn send_to_user(
    clients: Clients,
    user: String,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.user(user).send(&method, args).await
}

async fn send_to_users(
    clients: Clients,
    users: Vec<String>,
    method: String,
    args: Vec<Payload>,
) -> Result<(), signalr_core::Error> {
    clients.users(users).send(&method, args).await
}

async fn who_am_i(context: Context) -> serde_json::Value {
    serde_json::json!({
        "userId": context.user_identifier(),
        "name": context.user().and_then(|u| u.name()),
    })
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

async fn online_users(hub: HubContext) -> Vec<String> {
    sorted(hub.presence().online_users())
}

async fn user_connections(hub: HubContext, user: String) -> Vec<String> {
    sorted(hub.presence().user_connections(&user))
}

async fn group_members(hub: HubContext, group: String) -> Vec<String> {
    sorted(hub.presence().group_members(&group))
}

async fn group_size(hub: HubContext, group: String) -> usize {
    hub.presence().group_size(&group)
}

async fn admin_only(context: Context) -> String {
    format!(
        "hello admin {}",
        context.user_identifier().unwrap_or_default()
    )
}

static BLOCKED_RUNS: AtomicUsize = AtomicUsize::new(0);
static UNKNOWN_CALLS: AtomicUsize = AtomicUsize::new(0);

async fn blocked() -> &'static str {
    BLOCKED_RUNS.fetch_add(1, Ordering::SeqCst);
    "the filter let me through"
}

async fn blocked_runs() -> usize {
    BLOCKED_RUNS.load(Ordering::SeqCst)
}

async fn unknown_calls() -> usize {
    UNKNOWN_CALLS.load(Ordering::SeqCst)
}

/// Rejects `Blocked` before its body runs; counts calls to methods that do not exist.
async fn guard(invocation: HubInvocation, next: InvokeNext) -> InvocationOutcome {
    if invocation.method().eq_ignore_ascii_case("Blocked") {
        return InvocationOutcome::error(HubError::new("Blocked by a filter."));
    }
    if !invocation.method_exists() {
        UNKNOWN_CALLS.fetch_add(1, Ordering::SeqCst);
    }
    next.run(invocation).await
}

async fn abort(context: Context) {
    context.abort();
}

async fn sleep(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[derive(Deserialize)]
struct Broadcast {
    method: String,
    #[serde(default)]
    args: Vec<serde_json::Value>,
}

async fn admin_broadcast(
    State(state): State<AppState>,
    Json(body): Json<Broadcast>,
) -> &'static str {
    match state
        .hub_context
        .clients()
        .all()
        .send(&body.method, body.args)
        .await
    {
        Ok(()) => "ok",
        Err(_) => "failed",
    }
}

/// Connections whose `on_disconnected` ran, with the error they ended with.
async fn admin_disconnected(State(state): State<AppState>) -> Json<Vec<(String, Option<String>)>> {
    Json(state.disconnected.lock().unwrap().clone())
}

async fn admin_shutdown(State(state): State<AppState>) -> &'static str {
    state.shutdown.notify_one();
    "shutting down"
}

#[derive(Clone)]
struct AppState {
    hub_context: HubContext,
    shutdown: Arc<Notify>,
    disconnected: Disconnected,
}

type Disconnected = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn flag_value(args: &[String], name: &str) -> Option<u64> {
    let position = args.iter().position(|a| a == name)?;
    let value = args
        .get(position + 1)
        .unwrap_or_else(|| panic!("{name} needs a value"));
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} takes a whole number")),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();

    let disconnected = Disconnected::default();
    let record = disconnected.clone();
    let mut builder = Hub::builder()
        .on_disconnected(move |context: Context, error: Option<String>| {
            let record = record.clone();
            async move {
                record
                    .lock()
                    .unwrap()
                    .push((context.connection_id().to_owned(), error));
            }
        })
        .method("Echo", echo)
        .method("Add", add)
        .method("Describe", describe)
        .method("Void", void)
        .method("Throw", throw)
        .method("Fail", fail)
        .method("Fire", fire)
        .method("GetConnectionId", get_connection_id)
        .method("SendToCaller", send_to_caller)
        .method("SendToAll", send_to_all)
        .method("SendToOthers", send_to_others)
        .method("SendToClient", send_to_client)
        .method("SendToClients", send_to_clients)
        .method("GetTransport", get_transport)
        .method("JoinGroup", join_group)
        .method("LeaveGroup", leave_group)
        .method("SendToGroup", send_to_group)
        .method("SendToGroups", send_to_groups)
        .method("SendToGroupExcept", send_to_group_except)
        .method("SendToOthersInGroup", send_to_others_in_group)
        .method("SendToUser", send_to_user)
        .method("SendToUsers", send_to_users)
        .method("WhoAmI", who_am_i)
        .method("OnlineUsers", online_users)
        .method("UserConnections", user_connections)
        .method("GroupMembers", group_members)
        .method("GroupSize", group_size)
        .authorized_method("AdminOnly", Policy::claim("role", "admin"), admin_only)
        .method("Blocked", blocked)
        .method("BlockedRuns", blocked_runs)
        .method("UnknownCalls", unknown_calls)
        .filter(filter_fn(guard))
        .method("Abort", abort)
        .method("Sleep", sleep);
    if let Some(ms) = flag_value(&args, "--keep-alive-ms") {
        builder = builder.keep_alive_interval(Duration::from_millis(ms));
    }
    if let Some(ms) = flag_value(&args, "--client-timeout-ms") {
        builder = builder.client_timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = flag_value(&args, "--handshake-timeout-ms") {
        builder = builder.handshake_timeout(Duration::from_millis(ms));
    }
    if let Some(bytes) = flag_value(&args, "--max-message-size") {
        builder = builder.max_receive_message_size(bytes as usize);
    }
    if let Some(ms) = flag_value(&args, "--long-poll-timeout-ms") {
        builder = builder.long_poll_timeout(Duration::from_millis(ms));
    }
    if let Some(position) = args.iter().position(|a| a == "--transports") {
        let list = args.get(position + 1).expect("--transports needs a list");
        builder = builder.transports(list.split(',').map(|name| match name {
            "ws" => TransportKind::WebSockets,
            "sse" => TransportKind::ServerSentEvents,
            "lp" => TransportKind::LongPolling,
            other => panic!("unknown transport '{other}' (use ws, sse, lp)"),
        }));
    }
    if let Some(position) = args.iter().position(|a| a == "--jwt-secret") {
        let secret = args.get(position + 1).expect("--jwt-secret needs a value");
        builder = builder.authenticator(JwtAuthenticator::hs256(secret.as_bytes()));
    }
    if args.iter().any(|a| a == "--require-auth") {
        builder = builder.require(Policy::authenticated());
    }
    if args.iter().any(|a| a == "--detailed-errors") {
        builder = builder.enable_detailed_errors(true);
    }
    let hub = builder.build();

    let shutdown = Arc::new(Notify::new());
    let state = AppState {
        hub_context: hub.context(),
        shutdown: shutdown.clone(),
        disconnected,
    };
    let app = Router::new()
        .nest_service("/hub", hub.service())
        .route("/admin/broadcast", post(admin_broadcast))
        .route("/admin/shutdown", post(admin_shutdown))
        .route(
            "/admin/disconnected",
            axum::routing::get(admin_disconnected),
        )
        .with_state(state);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?.port());

    let hub_for_shutdown = hub.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown.notified() => {},
                _ = signalr_core::shutdown_signal() => {},
            }
            // Tell every client to go (with allowReconnect) before the HTTP server stops.
            hub_for_shutdown.shutdown().await;
        })
        .await
}
