//! The backplane against a real Redis, seen from the wire: what a hub publishes is byte-for-byte
//! the reference's format, and what a .NET server would publish (written here by hand) reaches
//! our clients; group commands are acknowledged and client results answered as the reference
//! expects; sharded pub/sub works; a dropped Redis connection is restored by itself.
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`) with a channel prefix unique to each
//! test, and for the connection-killing test a redis-server of its own. Without Redis this is
//! a warning locally and a failure under CI.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signalr_core::{Context, Hub, HubContext};
use signalr_redis::{RedisBackplane, RedisBackplaneBuilder};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
const WAIT: Duration = Duration::from_secs(5);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A prefix no other test (or test run) uses.
fn unique_prefix(name: &str) -> String {
    let nonce: u64 = rand_nonce();
    format!("Interop.{name}.{nonce:x}")
}

fn rand_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id())
}

/// Whether Redis answers; a missing Redis fails under CI and skips loudly otherwise.
async fn redis_available(url: &str) -> bool {
    let reachable = match redis::Client::open(url) {
        Ok(client) => client.get_multiplexed_async_connection().await.is_ok(),
        Err(_) => false,
    };
    if !reachable {
        if std::env::var_os("CI").is_some() {
            panic!("these tests need Redis at {url}: refusing to skip under CI");
        }
        eprintln!("\n!!!!!!!!!! WARNING: no Redis at {url}; SKIPPED (this would fail under CI) !!!!!!!!!!\n");
    }
    reachable
}

async fn id(ctx: Context) -> String {
    ctx.connection_id().to_owned()
}

/// A hub with the backplane, served on a free port.
async fn serve(settings: RedisBackplaneBuilder) -> (u16, HubContext, RedisBackplane) {
    let backplane = settings.connect().await.expect("backplane connects");
    let hub = Hub::builder()
        .backplane(backplane.clone())
        .method("Id", id)
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let context = hub.context();
    tokio::spawn(signalr_core::serve_with_shutdown(
        listener,
        "/hub",
        hub,
        std::future::pending(),
    ));
    (port, context, backplane)
}

/// A raw JSON client (skip negotiation), and its connection id.
async fn client(port: u16) -> (Socket, String) {
    let (mut socket, _) = connect_async(format!("ws://127.0.0.1:{port}/hub"))
        .await
        .unwrap();
    socket
        .send(Ws::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
        .await
        .unwrap();
    assert_eq!(next_record(&mut socket).await, json!({}));
    socket
        .send(Ws::text(
            "{\"type\":1,\"invocationId\":\"id\",\"target\":\"Id\",\"arguments\":[]}\u{1e}",
        ))
        .await
        .unwrap();
    let completion = next_record(&mut socket).await;
    let id = completion["result"].as_str().unwrap().to_owned();
    (socket, id)
}

/// The next record that is not a Ping, as raw text.
async fn next_text(socket: &mut Socket) -> String {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .unwrap();
        if let Ws::Text(text) = frame {
            for record in text.split('\u{1e}').filter(|r| !r.is_empty()) {
                if record != "{\"type\":6}" {
                    return format!("{record}\u{1e}");
                }
            }
        }
    }
}

async fn next_record(socket: &mut Socket) -> Value {
    serde_json::from_str(next_text(socket).await.trim_end_matches('\u{1e}')).unwrap()
}

/// A raw subscriber, as another server would be.
async fn subscriber(url: &str, channels: &[String]) -> redis::aio::PubSub {
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    for channel in channels {
        pubsub.subscribe(channel).await.unwrap();
    }
    pubsub
}

async fn next_publication(pubsub: &mut redis::aio::PubSub) -> (String, Vec<u8>) {
    let message = tokio::time::timeout(WAIT, pubsub.on_message().next())
        .await
        .expect("a publication in time")
        .unwrap();
    (
        message.get_channel_name().to_owned(),
        message.get_payload_bytes().to_vec(),
    )
}

async fn publish(url: &str, channel: &str, payload: &[u8]) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap()
}

fn str8(s: &str) -> Vec<u8> {
    assert!(s.len() < 32);
    let mut out = vec![0xa0 | s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

fn bin8(b: &[u8]) -> Vec<u8> {
    assert!(b.len() < 256);
    let mut out = vec![0xc4, b.len() as u8];
    out.extend_from_slice(b);
    out
}

/// `{"json": <json record>}` or with messagepack too, as a reference publisher writes it.
fn records(json: &str, messagepack: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![if messagepack.is_some() { 0x82 } else { 0x81 }];
    out.extend(str8("json"));
    out.extend(bin8(json.as_bytes()));
    if let Some(mp) = messagepack {
        out.extend(str8("messagepack"));
        out.extend(bin8(mp));
    }
    out
}

#[tokio::test]
async fn publications_are_byte_identical_to_the_reference() {
    let url = redis_url();
    if !redis_available(&url).await {
        return;
    }
    let prefix = unique_prefix("Publish");
    let channels = ["all", "group:g", "user:u", "connection:elsewhere"]
        .map(|c| format!("{prefix}:{c}"))
        .to_vec();
    let mut watcher = subscriber(&url, &channels).await;
    let (_, hub, _backplane) = serve(RedisBackplane::builder(url.as_str(), prefix.as_str())).await;

    // Invocation of Recv("hi", 1): the JSON record and the MessagePack record (length-prefixed
    // [1, {}, nil, "Recv", ["hi", 1], []]), exactly as the reference frames them.
    let json_record = "{\"type\":1,\"target\":\"Recv\",\"arguments\":[\"hi\",1]}\u{1e}";
    let mut mp_record = vec![0x0f, 0x96, 0x01, 0x80, 0xc0];
    mp_record.extend(str8("Recv"));
    mp_record.extend([0x92, 0xa2, b'h', b'i', 0x01, 0x90]);
    let both = records(json_record, Some(&mp_record));

    hub.clients().all().send("Recv", ("hi", 1)).await.unwrap();
    let (channel, payload) = next_publication(&mut watcher).await;
    assert_eq!(channel, format!("{prefix}:all"));
    assert_eq!(payload, [&[0x92, 0x90][..], &both].concat());

    hub.clients()
        .all_except(["x", "y"])
        .send("Recv", ("hi", 1))
        .await
        .unwrap();
    let (_, payload) = next_publication(&mut watcher).await;
    let excluded = [&[0x92, 0x92][..], &str8("x"), &str8("y")].concat();
    assert_eq!(payload, [&excluded[..], &both].concat());

    for (proxy, channel) in [
        (hub.clients().group("g"), "group:g"),
        (hub.clients().user("u"), "user:u"),
        (hub.clients().client("elsewhere"), "connection:elsewhere"),
    ] {
        proxy.send("Recv", ("hi", 1)).await.unwrap();
        let (published_on, payload) = next_publication(&mut watcher).await;
        assert_eq!(published_on, format!("{prefix}:{channel}"));
        assert_eq!(payload, [&[0x92, 0x90][..], &both].concat(), "{channel}");
    }
}

#[tokio::test]
async fn a_dotnet_servers_messages_commands_and_client_results_are_understood() {
    let url = redis_url();
    if !redis_available(&url).await {
        return;
    }
    let prefix = unique_prefix("FromDotnet");
    let (port, _hub, backplane) =
        serve(RedisBackplane::builder(url.as_str(), prefix.as_str())).await;
    let (mut socket, id) = client(port).await;

    // A send to all from a server offering JSON only, excluding someone else.
    let record = "{\"type\":1,\"target\":\"News\",\"arguments\":[\"to all\"]}\u{1e}";
    let payload = [&[0x92, 0x91][..], &str8("other"), &records(record, None)].concat();
    assert!(publish(&url, &format!("{prefix}:all"), &payload).await >= 1);
    assert_eq!(next_text(&mut socket).await, record);

    // Excluded connections are skipped.
    let skipped = "{\"type\":1,\"target\":\"News\",\"arguments\":[\"not you\"]}\u{1e}";
    let excluded_id = [&[0x92, 0x91][..], &str8_long(&id), &records(skipped, None)].concat();
    publish(&url, &format!("{prefix}:all"), &excluded_id).await;
    // To the connection itself.
    let direct = "{\"type\":1,\"target\":\"News\",\"arguments\":[\"direct\"]}\u{1e}";
    let payload = [&[0x92, 0x90][..], &records(direct, None)].concat();
    assert_eq!(
        publish(&url, &format!("{prefix}:connection:{id}"), &payload).await,
        1
    );
    assert_eq!(
        next_text(&mut socket).await,
        direct,
        "the excluded send was skipped"
    );

    // A group add from server "dotnet_1": acknowledged with [1], then group sends arrive.
    let mut acks = subscriber(&url, &[format!("{prefix}:internal:ack:dotnet_1")]).await;
    let command = [
        &[0x95, 0x01][..],
        &str8("dotnet_1"),
        &[0x01],
        &str8("g"),
        &str8_long(&id),
    ]
    .concat();
    publish(&url, &format!("{prefix}:internal:groups"), &command).await;
    let (_, ack) = next_publication(&mut acks).await;
    assert_eq!(ack, [0x91, 0x01]);
    let to_group = "{\"type\":1,\"target\":\"News\",\"arguments\":[\"group\"]}\u{1e}";
    let payload = [&[0x92, 0x90][..], &records(to_group, None)].concat();
    assert_eq!(
        publish(&url, &format!("{prefix}:group:g"), &payload).await,
        1
    );
    assert_eq!(next_text(&mut socket).await, to_group);

    // A client result asked by "dotnet_1": the client's Completion goes back framed in its
    // protocol, on the return channel.
    let return_channel = format!("{prefix}:internal:return:dotnet_1");
    let mut returns = subscriber(&url, std::slice::from_ref(&return_channel)).await;
    let ask = "{\"type\":1,\"invocationId\":\"q1\",\"target\":\"Ask\",\"arguments\":[]}\u{1e}";
    let payload = [
        &[0x94, 0x90][..],
        &records(ask, None),
        &str8("q1"),
        &str8_long(&return_channel),
    ]
    .concat();
    publish(&url, &format!("{prefix}:connection:{id}"), &payload).await;
    assert_eq!(next_text(&mut socket).await, ask);
    let answer = "{\"type\":3,\"invocationId\":\"q1\",\"result\":42}\u{1e}";
    socket.send(Ws::text(answer)).await.unwrap();
    let (_, completion) = next_publication(&mut returns).await;
    assert_eq!(
        completion,
        [&[0x92][..], &str8("json"), &bin8(answer.as_bytes())].concat()
    );
    assert!(backplane.stats().received >= 5);
}

/// A MessagePack string of any length below 256 bytes.
fn str8_long(s: &str) -> Vec<u8> {
    if s.len() < 32 {
        return str8(s);
    }
    let mut out = vec![0xd9, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

#[tokio::test]
async fn sharded_pub_sub_connects_processes() {
    let url = redis_url();
    if !redis_available(&url).await {
        return;
    }
    let prefix = unique_prefix("Sharded");
    let sharded = || {
        RedisBackplane::builder(url.as_str(), prefix.as_str())
            .sharded(true)
            .connect_timeout(WAIT)
    };
    let (port_a, hub_a, _a) = serve(sharded()).await;
    let (_, hub_b, b) = serve(sharded()).await;
    let (mut socket, id) = client(port_a).await;

    hub_b.clients().all().send("Hi", ("from b",)).await.unwrap();
    assert_eq!(
        next_record(&mut socket).await,
        json!({"type": 1, "target": "Hi", "arguments": ["from b"]})
    );
    hub_b.groups().add(&id, "shard-group").await.unwrap();
    hub_b
        .clients()
        .group("shard-group")
        .send("Hi", ("group",))
        .await
        .unwrap();
    assert_eq!(
        next_record(&mut socket).await["arguments"],
        json!(["group"])
    );
    assert_eq!(
        hub_b.presence().group_members("shard-group").await.unwrap(),
        vec![id]
    );
    assert!(b.stats().published >= 2);
    drop(hub_a);
}

/// A redis-server of this test's own, on a free port.
struct OwnRedis {
    child: Child,
    url: String,
}

impl OwnRedis {
    fn start() -> Option<OwnRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("redis-server is needed: {e}");
                }
                eprintln!("\n!!!!!!!!!! WARNING: no redis-server ({e}); SKIPPED !!!!!!!!!!\n");
                return None;
            }
        };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(OwnRedis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn killed_redis_connections_are_restored_without_a_restart() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let settings = || {
        RedisBackplane::builder(redis.url.as_str(), "Interop.Kill")
            .health_interval(Duration::from_millis(50))
    };
    let (port_a, _hub_a, a) = serve(settings()).await;
    let (_, hub_b, b) = serve(settings()).await;
    let (mut socket, _) = client(port_a).await;
    hub_b.clients().all().send("Hi", (1,)).await.unwrap();
    assert_eq!(next_record(&mut socket).await["arguments"], json!([1]));

    // Drop every client connection Redis has (ours included), as a failover would.
    let killer = redis::Client::open(redis.url.as_str()).unwrap();
    let mut killer = killer.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut killer)
        .await
        .unwrap();
    let killed_pubsub: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut killer)
        .await
        .unwrap();
    assert!(
        killed + killed_pubsub >= 2,
        "both backplanes' connections were dropped"
    );
    eventually("both backplanes to reconnect", || {
        a.stats().reconnects >= 1 && b.stats().reconnects >= 1 && a.is_healthy() && b.is_healthy()
    })
    .await;

    // Subscriptions were restored: cross-process delivery works again.
    hub_b.clients().all().send("Hi", (2,)).await.unwrap();
    assert_eq!(next_record(&mut socket).await["arguments"], json!([2]));

    // With Redis gone, cross-process sends fail fast and visibly, then recover.
    let port = redis.url.rsplit(':').next().unwrap().to_owned();
    drop(redis);
    eventually("the outage to be noticed", || !b.is_healthy()).await;
    let started = Instant::now();
    let error = hub_b.clients().all().send("Hi", (3,)).await.unwrap_err();
    assert!(error.is_backplane(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1), "no hanging");
    assert!(b.stats().publish_failures >= 1);

    let _again = Command::new("redis-server")
        .args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .map(|child| OwnRedis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        })
        .unwrap();
    eventually("recovery", || a.is_healthy() && b.is_healthy()).await;
    hub_b.clients().all().send("Hi", (4,)).await.unwrap();
    assert_eq!(next_record(&mut socket).await["arguments"], json!([4]));
}

/// A three-node Redis Cluster of this test's own (no replicas), torn down on drop.
struct OwnCluster {
    nodes: Vec<Child>,
    dir: std::path::PathBuf,
    seed: String,
}

impl OwnCluster {
    fn start() -> Option<OwnCluster> {
        // Each node needs its port and port + 10000 (the cluster bus) free.
        let mut ports = Vec::new();
        let mut candidate = 20_000 + (rand_nonce() % 10_000) as u16;
        while ports.len() < 3 {
            candidate += 1;
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if free(candidate) && free(candidate + 10_000) {
                ports.push(candidate);
            }
        }
        let dir = std::env::temp_dir().join(format!("signalr-redis-cluster-{}", rand_nonce()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for port in &ports {
            let spawned = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(dir.join(format!("nodes-{port}.conf")))
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match spawned {
                Ok(child) => nodes.push(child),
                Err(e) => {
                    if std::env::var_os("CI").is_some() {
                        panic!("redis-server is needed: {e}");
                    }
                    eprintln!("\n!!!!!!!!!! WARNING: no redis-server ({e}); SKIPPED !!!!!!!!!!\n");
                    return None;
                }
            }
        }
        let cluster = OwnCluster {
            nodes,
            dir,
            seed: format!("redis://127.0.0.1:{}", ports[0]),
        };
        for port in &ports {
            let deadline = Instant::now() + WAIT;
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(created.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &ports[0].to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli runs");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(cluster)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn sharded_channels_spread_over_a_redis_cluster() {
    let Some(cluster) = tokio::task::spawn_blocking(OwnCluster::start)
        .await
        .unwrap()
    else {
        return;
    };
    let settings = || {
        RedisBackplane::builder(cluster.seed.as_str(), "Interop.Cluster")
            .cluster(true)
            .sharded(true)
    };
    let (port_a, _hub_a, _a) = serve(settings()).await;
    let (_, hub_b, b) = serve(settings()).await;
    let (mut socket, id) = client(port_a).await;

    hub_b.clients().all().send("Hi", ("all",)).await.unwrap();
    assert_eq!(next_record(&mut socket).await["arguments"], json!(["all"]));
    hub_b
        .clients()
        .client(&id)
        .send("Hi", ("direct",))
        .await
        .unwrap();
    assert_eq!(
        next_record(&mut socket).await["arguments"],
        json!(["direct"])
    );

    // Groups whose channels hash to slots on different shards.
    for n in 0..12 {
        let group = format!("room-{n}");
        hub_b.groups().add(&id, &group).await.unwrap();
        hub_b
            .clients()
            .group(group.as_str())
            .send("Hi", (group.as_str(),))
            .await
            .unwrap();
        assert_eq!(next_record(&mut socket).await["arguments"], json!([group]));
    }
    let groups = hub_b.presence().connection_groups(&id).await.unwrap();
    assert_eq!(groups.len(), 12, "{groups:?}");
    assert!(b.is_healthy());
}
