//! The backplane itself: one RESP3 connection to Redis that publishes, subscribes and keeps
//! presence, plus the tasks that deliver what arrives and recover from outages.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
#[cfg(feature = "cluster")]
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use signalr_core::backplane::{
    Audience, Backplane, ConnectionInfo, LocalHub, PresenceQuery, SerializedCompletion,
    SerializedMessage,
};
use signalr_core::protocol::{InputBuffer, Message, Protocol};
use signalr_core::BoxFuture;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::error::Error;
use crate::observe;
use crate::presence::{PresenceKeys, PresenceOp, QueuedOp};
use crate::protocol::{
    decode_ack, encode_ack, GroupAction, GroupCommand, RedisChannels, RedisCompletion,
    RedisInvocation, ResultRoute,
};

/// One endpoint (reconnecting by itself) or a Redis Cluster (following its topology); both
/// multiplex commands and RESP3 pushes over their connections.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Settings of a [`RedisBackplane`]; defaults follow the reference where it has one.
#[derive(Debug, Clone)]
pub struct RedisBackplaneBuilder {
    url: String,
    prefix: String,
    server_name: Option<String>,
    sharded: bool,
    #[cfg(feature = "cluster")]
    cluster: bool,
    connect_timeout: Duration,
    publish_timeout: Duration,
    ack_timeout: Duration,
    health_interval: Duration,
    presence_ttl: Duration,
    max_pending_messages: usize,
}

impl RedisBackplaneBuilder {
    /// This process's name in the cluster (where acks and client results come back).
    /// Default: `{host}_{32 hex digits}`, as the reference makes it. Must be unique.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Use sharded pub/sub (`SSUBSCRIBE` / `SPUBLISH`, Redis 7+), which spreads channels over
    /// a Redis Cluster's shards instead of copying every message to every node. Every process
    /// of the hub must agree; ASP.NET Core servers use plain pub/sub, so a mixed cluster must
    /// leave this off. Default off.
    pub fn sharded(mut self, sharded: bool) -> Self {
        self.sharded = sharded;
        self
    }

    /// Treat the URL as one node of a Redis Cluster: the client discovers the other nodes,
    /// follows slot moves, and routes every sharded channel to the shard that owns it. Use with
    /// [`sharded`](Self::sharded)`(true)`, so that each message goes to one shard instead of
    /// every node. Default off (one Redis endpoint). Needs the `cluster` feature.
    #[cfg(feature = "cluster")]
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// How long [`connect`](Self::connect) waits for Redis. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one publish may take before the send fails. Default 5 s.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How long a group change for a connection on another process waits for its owner's
    /// acknowledgement. Default 30 s, as in the reference.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// How often the connection to Redis is checked (and, after an outage, restored).
    /// Default 1 s.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long a process's presence entries outlive it if it dies without cleaning up; it
    /// refreshes them every third of this. Default 15 s.
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Messages received from Redis and not yet delivered; past it, further messages are
    /// dropped and counted ([`BackplaneStats::dropped_incoming`]) rather than grow memory.
    /// Default 65,536.
    pub fn max_pending_messages(mut self, messages: usize) -> Self {
        self.max_pending_messages = messages.max(1);
        self
    }

    /// Connects to Redis and subscribes to the hub's shared channels.
    pub async fn connect(self) -> Result<RedisBackplane, Error> {
        RedisBackplane::start(self).await
    }
}

/// Counters since start, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackplaneStats {
    /// Messages published.
    pub published: u64,
    /// Publishes that failed (Redis unreachable or too slow); their local part was delivered.
    pub publish_failures: u64,
    /// Messages received from other processes.
    pub received: u64,
    /// Our own publications that came back and were skipped (already delivered locally).
    pub skipped_own: u64,
    /// Messages dropped because delivery fell too far behind.
    pub dropped_incoming: u64,
    /// Times the connection was restored after an outage.
    pub reconnects: u64,
}

/// The Redis backplane: several processes serving one hub, on the channels and payloads of
/// ASP.NET Core's `Microsoft.AspNetCore.SignalR.StackExchangeRedis`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let backplane = signalr_redis::RedisBackplane::builder("redis://127.0.0.1:6379", "MyApp.Hubs.ChatHub")
///     .connect()
///     .await?;
/// let hub = signalr_core::Hub::builder().backplane(backplane).build();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
}

/// State shared with the push callback, which exists before the rest.
struct Signals {
    healthy: AtomicBool,
    /// Counts connection losses, so a restore that raced with a new loss is not trusted.
    losses: AtomicU64,
    lost: Notify,
    dropped_incoming: AtomicU64,
}

pub(crate) struct Inner {
    channels: RedisChannels,
    prefix: String,
    server_name: String,
    settings: RedisBackplaneBuilder,
    conn: Connection,
    signals: Arc<Signals>,
    local: OnceLock<LocalHub>,
    subscriptions: Mutex<HashMap<String, Subscription>>,
    subscription_ops: mpsc::UnboundedSender<SubscriptionOp>,
    acks: Mutex<HashMap<i32, oneshot::Sender<()>>>,
    next_ack: AtomicI32,
    results: Mutex<HashMap<String, oneshot::Sender<SerializedCompletion>>>,
    own: Mutex<HashMap<u64, (u32, Instant)>>,
    presence: PresenceKeys,
    presence_ops: mpsc::Sender<QueuedOp>,
    presence_dirty: AtomicBool,
    /// Wakes the presence writer (after an outage, to rewrite at once).
    presence_wake: Arc<Notify>,
    published: AtomicU64,
    publish_failures: AtomicU64,
    received: AtomicU64,
    skipped_own: AtomicU64,
    reconnects: AtomicU64,
}

struct Subscription {
    count: usize,
    ready: watch::Receiver<bool>,
}

enum SubscriptionOp {
    Subscribe(String, watch::Sender<bool>),
    Unsubscribe(String),
    /// Subscribe again to everything (after a reconnect); answers whether it worked.
    Restore(oneshot::Sender<bool>),
}

/// How long our own publication is expected back; past it, its fingerprint is forgotten.
const OWN_ECHO_WINDOW: Duration = Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn default_server_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "server".to_owned());
    let id: u128 = rand::random();
    format!("{host}_{id:032x}")
}

impl RedisBackplane {
    /// Settings for a backplane on the Redis at `url`, with channels named after `prefix`
    /// (for a cluster shared with .NET servers, the .NET hub's full type name, such as
    /// `MyApp.Hubs.ChatHub`).
    pub fn builder(url: impl Into<String>, prefix: impl Into<String>) -> RedisBackplaneBuilder {
        RedisBackplaneBuilder {
            url: url.into(),
            prefix: prefix.into(),
            server_name: None,
            sharded: false,
            #[cfg(feature = "cluster")]
            cluster: false,
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(1),
            presence_ttl: Duration::from_secs(15),
            max_pending_messages: 65_536,
        }
    }

    /// Connects with default settings.
    pub async fn connect(url: impl Into<String>, prefix: impl Into<String>) -> Result<Self, Error> {
        Self::builder(url, prefix).connect().await
    }

    /// Whether Redis is reachable and every subscription is in place.
    pub fn is_healthy(&self) -> bool {
        self.inner.signals.healthy.load(Ordering::Acquire)
    }

    /// This process's name in the cluster.
    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    /// Counters since start.
    pub fn stats(&self) -> BackplaneStats {
        let inner = &self.inner;
        BackplaneStats {
            published: inner.published.load(Ordering::Relaxed),
            publish_failures: inner.publish_failures.load(Ordering::Relaxed),
            received: inner.received.load(Ordering::Relaxed),
            skipped_own: inner.skipped_own.load(Ordering::Relaxed),
            dropped_incoming: inner.signals.dropped_incoming.load(Ordering::Relaxed),
            reconnects: inner.reconnects.load(Ordering::Relaxed),
        }
    }

    async fn start(settings: RedisBackplaneBuilder) -> Result<Self, Error> {
        let signals = Arc::new(Signals {
            healthy: AtomicBool::new(true),
            losses: AtomicU64::new(0),
            lost: Notify::new(),
            dropped_incoming: AtomicU64::new(0),
        });
        let (incoming_tx, incoming_rx) = mpsc::channel(settings.max_pending_messages);
        let push_signals = signals.clone();
        // Runs on the connection's reader: it must never block, so a full queue drops.
        let on_push = move |info: PushInfo| -> Result<(), ()> {
            let is_message = matches!(info.kind, PushKind::Message | PushKind::SMessage);
            if info.kind == PushKind::Disconnection {
                push_signals.losses.fetch_add(1, Ordering::AcqRel);
                push_signals.healthy.store(false, Ordering::Release);
                push_signals.lost.notify_one();
            } else if is_message && incoming_tx.try_send((info, Instant::now())).is_err() {
                push_signals
                    .dropped_incoming
                    .fetch_add(1, Ordering::Relaxed);
                observe::dropped();
            }
            Ok(())
        };
        let conn = tokio::time::timeout(settings.connect_timeout, open(&settings, on_push))
            .await
            .map_err(|_| Error::connect("timed out"))??;

        let channels = RedisChannels::new(settings.prefix.clone());
        let server_name = settings
            .server_name
            .clone()
            .unwrap_or_else(default_server_name);
        let (subscription_ops, subscription_rx) = mpsc::unbounded_channel();
        let (presence_ops, presence_rx) = mpsc::channel(4096);
        let inner = Arc::new(Inner {
            presence: PresenceKeys::new(&settings.prefix, &server_name),
            channels,
            prefix: settings.prefix.clone(),
            server_name,
            settings,
            conn,
            signals,
            local: OnceLock::new(),
            subscriptions: Mutex::new(HashMap::new()),
            subscription_ops,
            acks: Mutex::new(HashMap::new()),
            next_ack: AtomicI32::new(0),
            results: Mutex::new(HashMap::new()),
            own: Mutex::new(HashMap::new()),
            presence_ops,
            presence_dirty: AtomicBool::new(true),
            presence_wake: Arc::new(Notify::new()),
            published: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            received: AtomicU64::new(0),
            skipped_own: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        });
        tokio::spawn(subscriber(Arc::downgrade(&inner), subscription_rx));
        tokio::spawn(receiver(Arc::downgrade(&inner), incoming_rx));
        tokio::spawn(health(Arc::downgrade(&inner)));
        tokio::spawn(crate::presence::writer(Arc::downgrade(&inner), presence_rx));

        // The channels every process listens on, for as long as it runs.
        let shared = [
            inner.channels.all(),
            inner.channels.group_management(),
            inner.channels.ack(&inner.server_name),
            inner.channels.return_results(&inner.server_name),
        ];
        let ready: Vec<_> = shared.into_iter().map(|c| inner.retain(c)).collect();
        let connect_timeout = inner.settings.connect_timeout;
        for mut ready in ready {
            let waited = tokio::time::timeout(connect_timeout, ready.wait_for(|r| *r)).await;
            if !matches!(waited, Ok(Ok(_))) || !inner.signals.healthy.load(Ordering::Acquire) {
                return Err(Error::connect("could not subscribe to the hub's channels"));
            }
        }
        Ok(RedisBackplane { inner })
    }
}

/// Opens the connection (RESP3, with `on_push` receiving messages and disconnections).
async fn open(
    settings: &RedisBackplaneBuilder,
    on_push: impl redis::aio::AsyncPushSender,
) -> Result<Connection, Error> {
    let info = settings
        .url
        .as_str()
        .into_connection_info()
        .map_err(Error::config)?;
    #[cfg(feature = "cluster")]
    if settings.cluster {
        let client = redis::cluster::ClusterClientBuilder::new(vec![info])
            .use_protocol(ProtocolVersion::RESP3)
            .push_sender(on_push)
            .connection_timeout(settings.connect_timeout)
            .response_timeout(settings.publish_timeout)
            .retries(1)
            .build()
            .map_err(Error::config)?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(Error::connect)?;
        return Ok(Connection::Cluster(conn));
    }
    let resp3 = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let client = redis::Client::open(info.set_redis_settings(resp3)).map_err(Error::config)?;
    let config = ConnectionManagerConfig::new()
        .set_push_sender(on_push)
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.publish_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(Error::connect)?;
    Ok(Connection::Single(conn))
}

impl Inner {
    pub(crate) fn local(&self) -> Option<&LocalHub> {
        self.local.get()
    }

    pub(crate) fn healthy(&self) -> bool {
        self.signals.healthy.load(Ordering::Acquire)
    }

    pub(crate) fn connection(&self) -> Connection {
        self.conn.clone()
    }

    pub(crate) fn presence_keys(&self) -> &PresenceKeys {
        &self.presence
    }

    pub(crate) fn presence_ttl(&self) -> Duration {
        self.settings.presence_ttl
    }

    pub(crate) fn presence_dirty(&self) -> &AtomicBool {
        &self.presence_dirty
    }

    pub(crate) fn presence_wake(&self) -> Arc<Notify> {
        self.presence_wake.clone()
    }

    fn presence_op(&self, op: PresenceOp) {
        // A full queue means presence fell behind: rewrite it whole instead of queueing more.
        if self.presence_ops.try_send((op, None)).is_err() {
            self.presence_dirty.store(true, Ordering::Release);
        }
    }

    /// Queues an addition and waits (bounded) until it is written, so that other processes
    /// see a connection or membership once `connection_added` / `group_joined` return. Order
    /// with earlier removals is kept: everything goes through the one queue.
    async fn presence_op_written(&self, op: PresenceOp) {
        let (done, written) = oneshot::channel();
        if self.presence_ops.try_send((op, Some(done))).is_err() {
            self.presence_dirty.store(true, Ordering::Release);
            return;
        }
        if self.healthy() {
            let _ = tokio::time::timeout(self.settings.publish_timeout, written).await;
        }
    }

    fn lost(&self) {
        self.signals.losses.fetch_add(1, Ordering::AcqRel);
        self.signals.healthy.store(false, Ordering::Release);
        self.signals.lost.notify_one();
    }

    /// Takes an interest in a channel; the receiver turns true once subscribed.
    fn retain(&self, channel: String) -> watch::Receiver<bool> {
        let mut subscriptions = lock(&self.subscriptions);
        if let Some(subscription) = subscriptions.get_mut(&channel) {
            subscription.count += 1;
            return subscription.ready.clone();
        }
        let (tx, rx) = watch::channel(false);
        subscriptions.insert(
            channel.clone(),
            Subscription {
                count: 1,
                ready: rx.clone(),
            },
        );
        // Sent under the lock, so the subscriber sees every channel's changes in order.
        let _ = self
            .subscription_ops
            .send(SubscriptionOp::Subscribe(channel, tx));
        rx
    }

    fn release(&self, channel: &str) {
        let mut subscriptions = lock(&self.subscriptions);
        let Some(subscription) = subscriptions.get_mut(channel) else {
            return;
        };
        subscription.count -= 1;
        if subscription.count == 0 {
            subscriptions.remove(channel);
            let _ = self
                .subscription_ops
                .send(SubscriptionOp::Unsubscribe(channel.to_owned()));
        }
    }

    fn is_subscribed(&self, channel: &str) -> bool {
        lock(&self.subscriptions).contains_key(channel)
    }

    /// Waits (bounded) until the channels are subscribed, unless Redis is down: then the
    /// subscription happens on recovery and nobody should wait for it.
    async fn until_ready(&self, ready: Vec<watch::Receiver<bool>>) {
        for mut ready in ready {
            if !self.healthy() {
                return;
            }
            let _ =
                tokio::time::timeout(self.settings.publish_timeout, ready.wait_for(|r| *r)).await;
        }
    }

    fn fingerprint(channel: &str, payload: &[u8]) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        channel.hash(&mut hasher);
        payload.hash(&mut hasher);
        hasher.finish()
    }

    /// Whether an incoming message is our own publication coming back (then it was already
    /// delivered locally).
    fn take_own(&self, channel: &str, payload: &[u8]) -> bool {
        let mut own = lock(&self.own);
        if own.is_empty() {
            return false;
        }
        let key = Self::fingerprint(channel, payload);
        match own.get_mut(&key) {
            Some((count, _)) if *count > 1 => {
                *count -= 1;
                true
            }
            Some(_) => {
                own.remove(&key);
                true
            }
            None => false,
        }
    }

    fn forget_own(&self, key: u64) {
        let mut own = lock(&self.own);
        if let Some((count, _)) = own.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                own.remove(&key);
            }
        }
    }

    /// Publishes; with `echo`, a copy coming back to our own subscription is recognized and
    /// skipped. Returns how many processes received it.
    pub(crate) async fn publish_raw(
        &self,
        channel: &str,
        payload: Vec<u8>,
        echo: bool,
    ) -> Result<i64, signalr_core::Error> {
        if !self.healthy() {
            self.publish_failures.fetch_add(1, Ordering::Relaxed);
            observe::publish_failed();
            return Err(signalr_core::Error::backplane(
                "Redis is unreachable; the message reached local connections only",
            ));
        }
        let own = (echo && self.is_subscribed(channel)).then(|| {
            let key = Self::fingerprint(channel, &payload);
            let mut own = lock(&self.own);
            let entry = own.entry(key).or_insert((0, Instant::now()));
            entry.0 += 1;
            entry.1 = Instant::now();
            key
        });
        let command = if self.settings.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let mut conn = self.conn.clone();
        let sent = tokio::time::timeout(
            self.settings.publish_timeout,
            redis::cmd(command)
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn),
        )
        .await;
        match sent {
            Ok(Ok(receivers)) => {
                self.published.fetch_add(1, Ordering::Relaxed);
                observe::published();
                Ok(receivers)
            }
            failed => {
                if let Some(key) = own {
                    self.forget_own(key);
                }
                self.publish_failures.fetch_add(1, Ordering::Relaxed);
                observe::publish_failed();
                let reason = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(%channel, %reason, "backplane publish failed");
                self.lost();
                Err(signalr_core::Error::backplane(format!(
                    "publishing to Redis failed ({reason}); the message reached local connections only"
                )))
            }
        }
    }

    /// Routes one message from Redis.
    fn on_message(self: &Arc<Self>, channel: &str, payload: Vec<u8>) {
        if self.take_own(channel, &payload) {
            self.skipped_own.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        observe::received();
        let Some(local) = self.local.get() else {
            return;
        };
        let Some(suffix) = channel.strip_prefix(self.prefix.as_str()) else {
            return;
        };
        let outcome = if suffix == ":all" {
            RedisInvocation::decode(&payload).map(|inv| {
                local.send_all(&inv.excluded, &serialized(&inv));
            })
        } else if suffix == ":internal:groups" {
            GroupCommand::decode(&payload).map(|command| self.on_group_command(command))
        } else if channel == self.channels.ack(&self.server_name) {
            decode_ack(&payload).map(|id| {
                if let Some(waiter) = lock(&self.acks).remove(&id) {
                    let _ = waiter.send(());
                }
            })
        } else if channel == self.channels.return_results(&self.server_name) {
            RedisCompletion::decode(&payload).map(|completion| self.on_completion(completion))
        } else if let Some(group) = suffix.strip_prefix(":group:") {
            RedisInvocation::decode(&payload).map(|inv| {
                local.send_group(group, &inv.excluded, &serialized(&inv));
            })
        } else if let Some(user) = suffix.strip_prefix(":user:") {
            RedisInvocation::decode(&payload).map(|inv| {
                local.send_user(user, &serialized(&inv));
            })
        } else if let Some(connection) = suffix.strip_prefix(":connection:") {
            RedisInvocation::decode(&payload).map(|inv| match &inv.result {
                Some(route) => self.on_remote_invocation(connection, route.clone(), &inv),
                None => {
                    local.send_connection(connection, &serialized(&inv));
                }
            })
        } else {
            Ok(())
        };
        if let Err(e) = outcome {
            tracing::warn!(%channel, error = %e, "ignored a malformed backplane message");
        }
    }

    fn on_group_command(self: &Arc<Self>, command: GroupCommand) {
        let Some(local) = self.local.get().cloned() else {
            return;
        };
        if !local.has_connection(&command.connection_id) {
            return; // Another process owns it (or nobody does); only the owner answers.
        }
        let inner = self.clone();
        tokio::spawn(async move {
            let applied = match command.action {
                GroupAction::Add => {
                    local
                        .add_to_group(&command.connection_id, &command.group)
                        .await
                }
                GroupAction::Remove => {
                    local.remove_from_group(&command.connection_id, &command.group)
                }
            };
            if applied {
                let channel = inner.channels.ack(&command.server_name);
                let _ = inner
                    .publish_raw(&channel, encode_ack(command.id), false)
                    .await;
            }
        });
    }

    fn on_remote_invocation(
        self: &Arc<Self>,
        connection: &str,
        route: ResultRoute,
        inv: &RedisInvocation,
    ) {
        let Some(local) = self.local.get() else {
            return;
        };
        let Some(answer) = local.invoke(connection, &route.invocation_id, &serialized(inv)) else {
            return;
        };
        let inner = self.clone();
        tokio::spawn(async move {
            let completion = answer.await;
            let payload = RedisCompletion {
                protocol: completion.protocol.name().to_owned(),
                completion: completion.record,
            }
            .encode();
            let _ = inner
                .publish_raw(&route.return_channel, payload, false)
                .await;
        });
    }

    fn on_completion(&self, completion: RedisCompletion) {
        let Some(protocol) = Protocol::from_name(&completion.protocol) else {
            tracing::warn!(protocol = %completion.protocol, "a client result in an unknown protocol");
            return;
        };
        let mut buf = InputBuffer::from(completion.completion.clone());
        let id = match protocol.decode(&mut buf, usize::MAX) {
            Ok(Some(Message::Completion(c))) => c.invocation_id,
            _ => {
                tracing::warn!("a client result that is not a Completion");
                return;
            }
        };
        if let Some(waiter) = lock(&self.results).remove(id.as_str()) {
            let _ = waiter.send(SerializedCompletion {
                protocol,
                record: completion.completion,
            });
        }
    }

    fn invocation_payload(
        excluded: &[String],
        message: &SerializedMessage,
        result: Option<ResultRoute>,
    ) -> Vec<u8> {
        RedisInvocation {
            excluded: excluded.to_vec(),
            serialized: message
                .records()
                .map(|(p, r)| (p.name().to_owned(), r.clone()))
                .collect(),
            result,
        }
        .encode()
    }
}

/// The records of an incoming invocation, by protocol (unknown protocols are skipped).
fn serialized(inv: &RedisInvocation) -> SerializedMessage {
    SerializedMessage::from_records(
        inv.serialized
            .iter()
            .filter_map(|(name, record)| Protocol::from_name(name).map(|p| (p, record.clone()))),
    )
}

/// Removes a pending entry when the waiting future goes away (timeout, cancellation).
struct PendingGuard<'a, K: Eq + Hash, V> {
    map: &'a Mutex<HashMap<K, V>>,
    key: Option<K>,
}

impl<K: Eq + Hash, V> Drop for PendingGuard<'_, K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(self.map).remove(&key);
        }
    }
}

impl Backplane for RedisBackplane {
    fn attach(&self, hub: LocalHub) {
        if self.inner.local.set(hub).is_err() {
            tracing::warn!("a RedisBackplane serves one hub; attaching it to a second is ignored");
        }
    }

    fn connection_added<'a>(&'a self, connection: &'a ConnectionInfo) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut ready = vec![inner.retain(inner.channels.connection(connection.id()))];
            if let Some(user) = connection.user_id() {
                ready.push(inner.retain(inner.channels.user(user)));
            }
            let presence = inner.presence_op_written(PresenceOp::Connected(
                connection.id().to_owned(),
                connection.user_id().unwrap_or_default().to_owned(),
            ));
            tokio::join!(presence, inner.until_ready(ready));
        })
    }

    fn connection_removed(&self, connection: &ConnectionInfo) {
        let inner = &self.inner;
        inner.release(&inner.channels.connection(connection.id()));
        if let Some(user) = connection.user_id() {
            inner.release(&inner.channels.user(user));
        }
        inner.presence_op(PresenceOp::Disconnected(connection.id().to_owned()));
    }

    fn group_joined<'a>(&'a self, connection_id: &'a str, group: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let ready = inner.retain(inner.channels.group(group));
            let presence = inner.presence_op_written(PresenceOp::Joined(
                connection_id.to_owned(),
                group.to_owned(),
            ));
            tokio::join!(presence, inner.until_ready(vec![ready]));
        })
    }

    fn group_left(&self, connection_id: &str, group: &str) {
        let inner = &self.inner;
        inner.release(&inner.channels.group(group));
        inner.presence_op(PresenceOp::Left(connection_id.to_owned(), group.to_owned()));
    }

    fn publish<'a>(
        &'a self,
        audience: Audience<'a>,
        message: &'a SerializedMessage,
    ) -> BoxFuture<'a, Result<(), signalr_core::Error>> {
        Box::pin(async move {
            let inner = &self.inner;
            let (channel, excluded, echo): (String, &[String], bool) = match audience {
                Audience::All { excluded } => (inner.channels.all(), excluded, true),
                Audience::Group { group, excluded } => {
                    (inner.channels.group(group), excluded, true)
                }
                Audience::User(user) => (inner.channels.user(user), &[], true),
                Audience::Connection(id) => (inner.channels.connection(id), &[], false),
                _ => {
                    return Err(signalr_core::Error::backplane(
                        "an audience this backplane does not know",
                    ))
                }
            };
            let payload = Inner::invocation_payload(excluded, message, None);
            inner.publish_raw(&channel, payload, echo).await.map(drop)
        })
    }

    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), signalr_core::Error>> {
        Box::pin(self.group_command(connection_id, group, GroupAction::Add))
    }

    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), signalr_core::Error>> {
        Box::pin(self.group_command(connection_id, group, GroupAction::Remove))
    }

    fn invoke<'a>(
        &'a self,
        connection_id: &'a str,
        invocation_id: &'a str,
        message: &'a SerializedMessage,
    ) -> BoxFuture<'a, Result<Option<SerializedCompletion>, signalr_core::Error>> {
        Box::pin(async move {
            let inner = &self.inner;
            let (tx, rx) = oneshot::channel();
            lock(&inner.results).insert(invocation_id.to_owned(), tx);
            let _guard = PendingGuard {
                map: &inner.results,
                key: Some(invocation_id.to_owned()),
            };
            let route = ResultRoute {
                invocation_id: invocation_id.to_owned(),
                return_channel: inner.channels.return_results(&inner.server_name),
            };
            let payload = Inner::invocation_payload(&[], message, Some(route));
            let receivers = inner
                .publish_raw(&inner.channels.connection(connection_id), payload, false)
                .await?;
            if receivers == 0 {
                return Ok(None);
            }
            rx.await.map(Some).map_err(|_| {
                signalr_core::Error::backplane("the backplane stopped while waiting for a result")
            })
        })
    }

    fn presence<'a>(
        &'a self,
        query: PresenceQuery<'a>,
    ) -> BoxFuture<'a, Result<Vec<String>, signalr_core::Error>> {
        Box::pin(crate::presence::query(&self.inner, query))
    }

    fn is_healthy(&self) -> bool {
        RedisBackplane::is_healthy(self)
    }
}

impl RedisBackplane {
    async fn group_command(
        &self,
        connection_id: &str,
        group: &str,
        action: GroupAction,
    ) -> Result<(), signalr_core::Error> {
        let inner = &self.inner;
        let id = inner.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&inner.acks).insert(id, tx);
        let _guard = PendingGuard {
            map: &inner.acks,
            key: Some(id),
        };
        let command = GroupCommand {
            id,
            server_name: inner.server_name.clone(),
            action,
            group: group.to_owned(),
            connection_id: connection_id.to_owned(),
        };
        inner
            .publish_raw(&inner.channels.group_management(), command.encode(), false)
            .await?;
        match tokio::time::timeout(inner.settings.ack_timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(signalr_core::Error::backplane(format!(
                "no server acknowledged the group change for connection '{connection_id}' in time"
            ))),
        }
    }
}

/// Applies subscription changes in order, batching what queued up meanwhile.
async fn subscriber(inner: Weak<Inner>, mut ops: mpsc::UnboundedReceiver<SubscriptionOp>) {
    while let Some(first) = ops.recv().await {
        let mut batch = vec![first];
        // Whatever else is queued, up to a bound, goes in the same round.
        let room = 1024usize.saturating_sub(batch.len());
        batch.extend(std::iter::from_fn(|| ops.try_recv().ok()).take(room));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let (subscribe, unsubscribe) = if inner.settings.sharded {
            ("SSUBSCRIBE", "SUNSUBSCRIBE")
        } else {
            ("SUBSCRIBE", "UNSUBSCRIBE")
        };
        // Consecutive operations of one kind go out as one command.
        let mut run: Vec<String> = Vec::new();
        let mut run_is_subscribe = true;
        let mut ready: Vec<watch::Sender<bool>> = Vec::new();
        for op in batch {
            match op {
                SubscriptionOp::Subscribe(channel, tx) => {
                    if !run_is_subscribe && !run.is_empty() {
                        send_channels(&inner, unsubscribe, std::mem::take(&mut run)).await;
                    }
                    run_is_subscribe = true;
                    run.push(channel);
                    ready.push(tx);
                }
                SubscriptionOp::Unsubscribe(channel) => {
                    if run_is_subscribe && !run.is_empty() {
                        send_channels(&inner, subscribe, std::mem::take(&mut run)).await;
                    }
                    run_is_subscribe = false;
                    run.push(channel);
                }
                SubscriptionOp::Restore(done) => {
                    if !run.is_empty() {
                        let kind = if run_is_subscribe {
                            subscribe
                        } else {
                            unsubscribe
                        };
                        send_channels(&inner, kind, std::mem::take(&mut run)).await;
                    }
                    let all: Vec<String> = lock(&inner.subscriptions).keys().cloned().collect();
                    let _ = done.send(send_channels(&inner, subscribe, all).await);
                }
            }
        }
        if !run.is_empty() {
            let kind = if run_is_subscribe {
                subscribe
            } else {
                unsubscribe
            };
            send_channels(&inner, kind, run).await;
        }
        // Waiters go on either way: on failure the health check restores everything.
        for tx in ready {
            let _ = tx.send(true);
        }
    }
}

async fn send_channels(inner: &Inner, command: &str, channels: Vec<String>) -> bool {
    #[cfg(feature = "cluster")]
    if let Connection::Cluster(conn) = &inner.conn {
        return send_cluster_channels(inner, conn.clone(), command, channels).await;
    }
    let mut ok = true;
    for chunk in channels.chunks(512) {
        let mut cmd = redis::cmd(command);
        for channel in chunk {
            cmd.arg(channel);
        }
        let mut conn = inner.conn.clone();
        let done = tokio::time::timeout(
            inner.settings.publish_timeout,
            cmd.query_async::<Value>(&mut conn),
        )
        .await;
        if !matches!(done, Ok(Ok(_))) {
            tracing::warn!(%command, "backplane subscription change failed");
            inner.lost();
            ok = false;
        }
    }
    ok
}

#[cfg(feature = "cluster")]
/// In a cluster, each channel goes to its own shard (one command per channel), through the
/// client's own methods so that it re-subscribes them after topology changes.
async fn send_cluster_channels(
    inner: &Inner,
    mut conn: ClusterConnection,
    command: &str,
    channels: Vec<String>,
) -> bool {
    let mut ok = true;
    for channel in channels {
        let done = tokio::time::timeout(inner.settings.publish_timeout, async {
            match command {
                "SSUBSCRIBE" => conn.ssubscribe(&channel).await,
                "SUNSUBSCRIBE" => conn.sunsubscribe(&channel).await,
                "SUBSCRIBE" => conn.subscribe(&channel).await,
                _ => conn.unsubscribe(&channel).await,
            }
        })
        .await;
        if !matches!(done, Ok(Ok(()))) {
            tracing::warn!(%command, %channel, "backplane subscription change failed");
            inner.lost();
            ok = false;
        }
    }
    ok
}

/// Delivers what Redis pushes, in order.
/// The time each push arrived comes with it: how long it waited is the backplane's lag.
async fn receiver(inner: Weak<Inner>, mut incoming: mpsc::Receiver<(PushInfo, Instant)>) {
    while let Some((push, arrived)) = incoming.recv().await {
        observe::waited(arrived.elapsed());
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut data = push.data.into_iter();
        let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
            continue;
        };
        let (Some(channel), Some(payload)) = (bytes_of(channel), bytes_of(payload)) else {
            continue;
        };
        let channel = String::from_utf8_lossy(&channel);
        inner.on_message(&channel, payload);
    }
}

fn bytes_of(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// Checks Redis every interval (at once after a disconnect); after an outage, subscribes
/// again to every channel and rewrites presence, then reports healthy.
async fn health(inner: Weak<Inner>) {
    loop {
        let (interval, signals) = match inner.upgrade() {
            Some(inner) => (inner.settings.health_interval, inner.signals.clone()),
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = signals.lost.notified() => {
                // Let the connection manager start its reconnect first.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut conn = inner.conn.clone();
        let ping = tokio::time::timeout(
            interval.max(Duration::from_millis(500)),
            redis::cmd("PING").query_async::<Value>(&mut conn),
        )
        .await;
        let reachable = matches!(ping, Ok(Ok(_)));
        if !reachable {
            if inner.signals.healthy.swap(false, Ordering::AcqRel) {
                tracing::warn!("Redis backplane unreachable; local delivery continues");
            }
            // Nothing we published can come back now.
            lock(&inner.own).clear();
            continue;
        }
        if !inner.healthy() {
            lock(&inner.own).clear();
            let losses = inner.signals.losses.load(Ordering::Acquire);
            let (done, restored) = oneshot::channel();
            let _ = inner.subscription_ops.send(SubscriptionOp::Restore(done));
            let restored = restored.await.unwrap_or(false);
            // Lost again meanwhile: the next round restores once more.
            if restored && inner.signals.losses.load(Ordering::Acquire) == losses {
                inner.signals.healthy.store(true, Ordering::Release);
                inner.presence_dirty.store(true, Ordering::Release);
                inner.presence_wake.notify_one();
                inner.reconnects.fetch_add(1, Ordering::Relaxed);
                observe::reconnected();
                tracing::info!("Redis backplane reconnected; subscriptions restored");
            }
        }
        let now = Instant::now();
        lock(&inner.own).retain(|_, (_, at)| now.duration_since(*at) < OWN_ECHO_WINDOW);
    }
}
