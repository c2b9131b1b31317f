//! `REDIS_CLUSTER=true` reaches the backplane: on a Redis Cluster the hub's channels are sharded
//! channels (SSUBSCRIBE, one shard each), and without the flag they are plain pub/sub ones. The
//! cluster is a one-node Redis Cluster of the test's own, on a free port.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Kills the process (a Redis node or chat-app) when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // The cluster bus takes port + 10000: both must be free.
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A one-node Redis Cluster owning every slot; `None` when redis-server is missing (outside CI).
fn one_node_cluster(dir: &std::path::Path) -> Option<(Killed, u16)> {
    let port = free_port();
    let spawned = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes", "--cluster-config-file"])
        .arg(dir.join("nodes.conf"))
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .spawn();
    let node = match spawned {
        Ok(child) => Killed(child),
        Err(e) if std::env::var_os("CI").is_some() => panic!("redis-server is needed: {e}"),
        Err(e) => {
            eprintln!("\n!!!!!!!!!! WARNING: no redis-server ({e}); SKIPPED !!!!!!!!!!\n");
            return None;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis_cli(port, &["ping"]).contains("PONG") {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(redis_cli(port, &["cluster", "addslotsrange", "0", "16383"]).contains("OK"));
    while !redis_cli(port, &["cluster", "info"]).contains("cluster_state:ok") {
        assert!(
            Instant::now() < deadline,
            "the cluster did not become ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((node, port))
}

/// Starts chat-app on the cluster (with `REDIS_CLUSTER` as given) and returns it with its port.
fn chat_app(redis_port: u16, cluster: &str, prefix: &str, db: &std::path::Path) -> (Killed, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-app"))
        .env_clear()
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}?mode=rwc", db.display()),
        )
        .env("REDIS_URL", format!("redis://127.0.0.1:{redis_port}"))
        .env("REDIS_CLUSTER", cluster)
        .env("REDIS_CHANNEL_PREFIX", prefix)
        .env("JWT_SECRET", "redis-cluster-test-secret-0123456789")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("chat-app starts");
    let stdout = child.stdout.take().unwrap();
    let app = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("chat-app did not start: {line:?}"));
    (app, port)
}

fn get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn redis_cluster_true_puts_the_hub_on_sharded_channels() {
    let dir = std::env::temp_dir().join(format!("chat-redis-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let Some((_node, redis_port)) = one_node_cluster(&dir) else {
        return;
    };
    for (cluster, sharded) in [("true", true), ("false", false)] {
        let prefix = format!("ChatApp.ClusterTest.{cluster}");
        let (_app, port) = chat_app(redis_port, cluster, &prefix, &dir.join("chat.db"));
        let health = get(port, "/health");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(
            health.contains(r#""backplane":{"status":"ok"}"#),
            "{health}"
        );
        let all = format!("{prefix}:all");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listed = |kind: &str| {
            redis_cli(redis_port, &["pubsub", kind])
                .lines()
                .any(|l| l == all)
        };
        while !(listed("shardchannels") || listed("channels")) {
            assert!(Instant::now() < deadline, "{all} never subscribed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            listed("shardchannels"),
            sharded,
            "REDIS_CLUSTER={cluster}: {all} as a sharded channel"
        );
        assert_eq!(listed("channels"), !sharded);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
