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
//! HS256 bearer tokens signed with S), `--require-auth` (refuse anonymous callers),
//! `--stateful` (allow stateful reconnect), `--disconnect-timeout-ms N` (its grace period).
//!
//! Groups, users and presence: `JoinGroup`, `LeaveGroup`, `SendToGroup`, `SendToGroups`,
//! `SendToGroupExcept`, `SendToOthersInGroup`, `SendToUser`, `SendToUsers`, `WhoAmI`,
//! `OnlineUsers`, `UserConnections`, `GroupMembers`, `GroupSize`; `AdminOnly` requires the claim
//! `role=admin`. A filter rejects `Blocked` before its body runs (`BlockedRuns` counts bodies)
//! and counts calls to methods that do not exist (`UnknownCalls`).
//!
//! Stateful reconnect: `StartNumbers(count, intervalMs)` pushes `Number(n)` to the caller from a
//! background task; `Record(n)` remembers what the caller sent and `Recorded()` returns it;
//! `ConnectCount(connectionId)` tells how many times `on_connected` ran for a connection.
//!
//! Streams and client results: `Counter(count, delayMs)` streams 1..=count; `FailAfter(n)`
//! streams n items then fails; `Endless(delayMs)` streams until cancelled, and
//! `StreamState()` reports `{active, stopped, lastStopMs}` of its producers (when each was
//! dropped) so tests can see a cancelled producer stop; `Sum(stream)` adds an uploaded stream
//! (`SumToCaller(stream)` sends the sum to the caller as `SumResult`);
//! `Doubles(stream)` uploads and streams back each item doubled; `AskCaller(method, args)` asks
//! the caller for a client result and returns it (or its error); `POST /admin/ask
//! {"connectionId", "method", "args"}` does the same from outside the hub and answers
//! `{"result": ...}` or `{"error": "..."}`.
//!
//! Per-protocol values: `Echo(value)` returns the received value untouched (a `Payload`);
//! `EchoBinary(bytes)` and `EchoDate(instant)` bind and return a `Binary` / `DateTime`;
//! `BinaryOf(text)` returns the UTF-8 bytes of `text` as a `Binary`, `BinaryHex(bytes)` the
//! hex of what it bound; `DateOf(millis)` returns the instant `millis` after the Unix epoch,
//! `DateMillis(instant)` the milliseconds of what it bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use signalr_core::protocol::{Binary, DateTime, Payload};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures_util::{Stream, StreamExt};

use signalr_core::auth::JwtAuthenticator;
use signalr_core::{
    filter_fn, Clients, Context, Hub, HubContext, HubError, HubInvocation, InvocationOutcome,
    InvokeNext, Policy, TransportKind, UploadStream,
};
use tokio::sync::Notify;

/// What the hub saw of the transport request: `Context.GetHttpContext()`'s counterpart.
async fn request_info(request: signalr_core::HttpRequest) -> serde_json::Value {
    serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "room": request.query("room"),
        "header": request.headers().get("x-app").and_then(|v| v.to_str().ok()),
        "loopback": request.remote_addr().map(|addr| addr.ip().is_loopback()),
    })
}

async fn echo(value: Payload) -> Payload {
    value
}

async fn echo_binary(value: Binary) -> Binary {
    value
}

async fn echo_date(value: DateTime) -> DateTime {
    value
}

async fn binary_of(text: String) -> Binary {
    Binary::from(text.into_bytes())
}

async fn binary_hex(value: Binary) -> String {
    value.iter().map(|b| format!("{b:02x}")).collect()
}

async fn date_of(millis: i64) -> Result<DateTime, HubError> {
    DateTime::from_unix_millis(millis).map_err(|e| HubError::new(e.to_string()))
}

async fn date_millis(value: DateTime) -> i64 {
    value.unix_millis()
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

/// Adds any connection (on any server process, with a backplane) to a group.
async fn add_to_group(
    context: Context,
    connection_id: String,
    group: String,
) -> Result<(), signalr_core::Error> {
    context.groups().add(&connection_id, &group).await
}

async fn remove_from_group(
    context: Context,
    connection_id: String,
    group: String,
) -> Result<(), signalr_core::Error> {
    context.groups().remove(&connection_id, &group).await
}

/// Asks any connection (on any server process) for a client result.
async fn ask_client(
    clients: Clients,
    connection_id: String,
    method: String,
    args: Vec<Payload>,
) -> Result<serde_json::Value, HubError> {
    clients
        .client(connection_id)
        .invoke::<serde_json::Value, _>(&method, args)
        .await
        .map_err(|e| HubError::new(client_error_text(&e)))
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

async fn online_users(hub: HubContext) -> Result<Vec<String>, HubError> {
    Ok(sorted(hub.presence().online_users().await?))
}

async fn user_connections(hub: HubContext, user: String) -> Result<Vec<String>, HubError> {
    Ok(sorted(hub.presence().user_connections(&user).await?))
}

async fn group_members(hub: HubContext, group: String) -> Result<Vec<String>, HubError> {
    Ok(sorted(hub.presence().group_members(&group).await?))
}

async fn group_size(hub: HubContext, group: String) -> Result<usize, HubError> {
    Ok(hub.presence().group_size(&group).await?)
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

static ENDLESS_ACTIVE: AtomicUsize = AtomicUsize::new(0);
static ENDLESS_STOPPED: AtomicUsize = AtomicUsize::new(0);
static LAST_STOP_MS: AtomicU64 = AtomicU64::new(0);

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

async fn counter(count: u64, delay_ms: u64) -> impl Stream<Item = u64> {
    futures_util::stream::iter(1..=count).then(move |n| async move {
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        n
    })
}

async fn fail_after(items: u64) -> impl Stream<Item = Result<u64, HubError>> {
    futures_util::stream::iter(1..=items + 1).map(move |n| {
        if n > items {
            Err(HubError::new("the producer broke"))
        } else {
            Ok(n)
        }
    })
}

/// Counts live producers; dropping the stream (cancellation) records when it stopped.
struct ProducerGuard;

impl ProducerGuard {
    fn new() -> Self {
        ENDLESS_ACTIVE.fetch_add(1, Ordering::SeqCst);
        ProducerGuard
    }
}

impl Drop for ProducerGuard {
    fn drop(&mut self) {
        ENDLESS_ACTIVE.fetch_sub(1, Ordering::SeqCst);
        ENDLESS_STOPPED.fetch_add(1, Ordering::SeqCst);
        LAST_STOP_MS.store(unix_ms(), Ordering::SeqCst);
    }
}

async fn endless(delay_ms: u64) -> impl Stream<Item = u64> {
    futures_util::stream::unfold((0u64, ProducerGuard::new()), move |(n, guard)| async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        Some((n + 1, (n + 1, guard)))
    })
}

async fn stream_state() -> serde_json::Value {
    serde_json::json!({
        "active": ENDLESS_ACTIVE.load(Ordering::SeqCst),
        "stopped": ENDLESS_STOPPED.load(Ordering::SeqCst),
        "lastStopMs": LAST_STOP_MS.load(Ordering::SeqCst),
    })
}

async fn sum(mut numbers: UploadStream<i64>) -> Result<i64, HubError> {
    let mut total = 0;
    while let Some(n) = numbers.next().await {
        total += n?;
    }
    Ok(total)
}

/// For clients that upload with a non-blocking invocation: the sum comes back as `SumResult`.
async fn sum_to_caller(clients: Clients, numbers: UploadStream<i64>) -> Result<(), HubError> {
    let total = sum(numbers).await?;
    clients.caller().send("SumResult", (total,)).await?;
    Ok(())
}

async fn doubles(numbers: UploadStream<i64>) -> impl Stream<Item = Result<i64, HubError>> {
    numbers.map(|n| n.map(|n| n * 2))
}

async fn ask_caller(
    clients: Clients,
    method: String,
    args: Vec<Payload>,
) -> Result<serde_json::Value, HubError> {
    clients
        .caller()
        .invoke::<serde_json::Value, _>(&method, args)
        .await
        .map_err(|e| HubError::new(client_error_text(&e)))
}

fn client_error_text(error: &signalr_core::Error) -> String {
    use std::error::Error as _;
    match error.source() {
        Some(source) => source.to_string(),
        None => error.to_string(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ask {
    connection_id: String,
    method: String,
    #[serde(default)]
    args: Vec<serde_json::Value>,
}

/// The backplane's health and counters (`backplane: null` without one).
async fn admin_health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(match &state.backplane {
        None => serde_json::json!({ "backplane": null }),
        Some(redis) => {
            let stats = redis.stats();
            serde_json::json!({
                "backplane": redis.is_healthy(),
                "server": redis.server_name(),
                "published": stats.published,
                "publishFailures": stats.publish_failures,
                "received": stats.received,
                "skippedOwn": stats.skipped_own,
                "reconnects": stats.reconnects,
            })
        }
    })
}

async fn admin_ask(
    State(state): State<AppState>,
    Json(body): Json<Ask>,
) -> Json<serde_json::Value> {
    let answer = state
        .hub_context
        .clients()
        .client(body.connection_id)
        .invoke::<serde_json::Value, _>(&body.method, body.args)
        .await;
    Json(match answer {
        Ok(result) => serde_json::json!({ "result": result }),
        Err(e) => {
            serde_json::json!({ "error": client_error_text(&e), "kind": if e.is_client() { "client" } else if e.is_closed() { "closed" } else if e.is_timeout() { "timeout" } else { "other" } })
        }
    })
}

/// Numbers pushed to the caller from a background task: `Number(1)`, `Number(2)`, ...
async fn start_numbers(context: Context, count: u64, interval_ms: u64) {
    let hub = context.hub();
    let id = context.connection_id().to_owned();
    tokio::spawn(async move {
        for n in 1..=count {
            let _ = hub.clients().client(id.clone()).send("Number", (n,)).await;
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
    });
}

type PerConnection<T> = Mutex<std::collections::HashMap<String, T>>;

fn recorded() -> &'static PerConnection<Vec<i64>> {
    static RECORDED: std::sync::OnceLock<PerConnection<Vec<i64>>> = std::sync::OnceLock::new();
    RECORDED.get_or_init(Default::default)
}

fn connect_counts() -> &'static PerConnection<usize> {
    static COUNTS: std::sync::OnceLock<PerConnection<usize>> = std::sync::OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

/// Remembers what the client sent, in arrival order (to check nothing is lost or repeated).
async fn record_value(context: Context, n: i64) {
    recorded()
        .lock()
        .unwrap()
        .entry(context.connection_id().to_owned())
        .or_default()
        .push(n);
}

async fn recorded_values(context: Context) -> Vec<i64> {
    recorded()
        .lock()
        .unwrap()
        .get(context.connection_id())
        .cloned()
        .unwrap_or_default()
}

/// How many times `on_connected` ran for a connection id.
async fn connect_count(connection_id: String) -> usize {
    connect_counts()
        .lock()
        .unwrap()
        .get(&connection_id)
        .copied()
        .unwrap_or_default()
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
    backplane: Option<signalr_redis::RedisBackplane>,
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
        .on_connected(|context: Context| async move {
            *connect_counts()
                .lock()
                .unwrap()
                .entry(context.connection_id().to_owned())
                .or_default() += 1;
        })
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
        .method("RequestInfo", request_info)
        .method("EchoBinary", echo_binary)
        .method("EchoDate", echo_date)
        .method("BinaryOf", binary_of)
        .method("BinaryHex", binary_hex)
        .method("DateOf", date_of)
        .method("DateMillis", date_millis)
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
        .method("StartNumbers", start_numbers)
        .method("Record", record_value)
        .method("Recorded", recorded_values)
        .method("ConnectCount", connect_count)
        .method("JoinGroup", join_group)
        .method("LeaveGroup", leave_group)
        .method("AddToGroup", add_to_group)
        .method("RemoveFromGroup", remove_from_group)
        .method("AskClient", ask_client)
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
        .method("Counter", counter)
        .method("FailAfter", fail_after)
        .method("Endless", endless)
        .method("StreamState", stream_state)
        .method("Sum", sum)
        .method("SumToCaller", sum_to_caller)
        .method("Doubles", doubles)
        .method("AskCaller", ask_caller)
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
    if args.iter().any(|a| a == "--stateful") {
        builder = builder.allow_stateful_reconnect(true);
    }
    if let Some(ms) = flag_value(&args, "--disconnect-timeout-ms") {
        builder = builder.disconnect_timeout(Duration::from_millis(ms));
    }
    if args.iter().any(|a| a == "--require-auth") {
        builder = builder.require(Policy::authenticated());
    }
    if args.iter().any(|a| a == "--detailed-errors") {
        builder = builder.enable_detailed_errors(true);
    }
    if let Some(position) = args.iter().position(|a| a == "--token-key") {
        let key = args.get(position + 1).expect("--token-key needs a value");
        builder = builder.portable_connection_tokens(key);
    }
    let mut backplane = None;
    if let Some(position) = args.iter().position(|a| a == "--redis") {
        let url = args.get(position + 1).expect("--redis needs a URL");
        let prefix = args
            .iter()
            .position(|a| a == "--redis-prefix")
            .and_then(|p| args.get(p + 1))
            .cloned()
            .unwrap_or_else(|| "Conformance.Hub".to_owned());
        let mut settings = signalr_redis::RedisBackplane::builder(url.as_str(), prefix);
        if let Some(name) = args
            .iter()
            .position(|a| a == "--server-name")
            .and_then(|p| args.get(p + 1))
        {
            settings = settings.server_name(name.as_str());
        }
        if let Some(ms) = flag_value(&args, "--redis-health-ms") {
            settings = settings.health_interval(Duration::from_millis(ms));
        }
        if let Some(ms) = flag_value(&args, "--redis-presence-ttl-ms") {
            settings = settings.presence_ttl(Duration::from_millis(ms));
        }
        if let Some(ms) = flag_value(&args, "--redis-ack-timeout-ms") {
            settings = settings.ack_timeout(Duration::from_millis(ms));
        }
        if args.iter().any(|a| a == "--redis-sharded") {
            settings = settings.sharded(true);
        }
        let redis = settings
            .connect()
            .await
            .unwrap_or_else(|e| panic!("backplane: {e}"));
        builder = builder.backplane(redis.clone());
        backplane = Some(redis);
    }
    let hub = builder.build();

    let shutdown = Arc::new(Notify::new());
    let state = AppState {
        hub_context: hub.context(),
        shutdown: shutdown.clone(),
        disconnected,
        backplane,
    };
    let app = Router::new()
        .nest_service("/hub", hub.service())
        // A raw connection endpoint: bytes back as they came, no hub protocol.
        .nest_service(
            "/echo",
            signalr_core::ConnectionHandler::new(|mut connection| async move {
                while let Some(data) = connection.recv().await {
                    if connection.send(data).await.is_err() {
                        break;
                    }
                }
            })
            .service(),
        )
        // The same hub again, long polling and Server-Sent Events only (one registry).
        .nest_service(
            "/hub-nowebsockets",
            hub.service_with(
                signalr_core::EndpointOptions::new()
                    .transports([TransportKind::ServerSentEvents, TransportKind::LongPolling]),
            ),
        )
        .route("/admin/broadcast", post(admin_broadcast))
        .route("/admin/shutdown", post(admin_shutdown))
        .route("/admin/ask", post(admin_ask))
        .route("/admin/health", axum::routing::get(admin_health))
        .route(
            "/admin/disconnected",
            axum::routing::get(admin_disconnected),
        )
        .with_state(state)
        // The documented recipe for the peer address under axum: ConnectInfo -> RemoteAddr.
        .layer(axum::middleware::from_fn(
            |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
             mut request: axum::extract::Request,
             next: axum::middleware::Next| async move {
                request
                    .extensions_mut()
                    .insert(signalr_core::RemoteAddr(peer));
                next.run(request).await
            },
        ));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?.port());

    let hub_for_shutdown = hub.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
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
