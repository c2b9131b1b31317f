//! `signalr-bench scale`: many concurrent WebSocket connections, held by several server
//! processes joined by the Redis backplane, and broadcasts that must reach every one of them
//! (issue 17).
//!
//! One process may hold at most 20,000 open files, so the connections are spread over as many
//! server processes (`serve ours` with `SIGNALR_BENCH_REDIS` set, each unpinned) and as many
//! generator processes (`scale-client`) as that limit requires. Each generator binds its
//! sockets to a source address of its own in 127.0.0.0/8, so no source/destination pair runs
//! short of ephemeral ports. Each connection is a plain SignalR JSON client over WebSocket
//! (skip-negotiation): it completes the handshake, sends a ping every 15 s as the official
//! clients do, and records when each broadcast reaches it.
//!
//! A control connection on the first server then invokes `Broadcast` a few times, seconds
//! apart; each payload carries its send time (microseconds of the system clock, which all the
//! processes on this machine share). Every generator reports what its connections received;
//! the run reports delivered/expected, latency quantiles over every delivery, the time to the
//! last delivery of each broadcast, and the servers' RSS per connection.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signalr_core::protocol::Protocol;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;

use crate::client::{self, markers, Wire};
use crate::scenarios::quantile;
use crate::servers::{self, rss_kib};

/// Connections one process holds at most: the 20,000-file limit, less room for the
/// process's own files, its Redis connections and the control connection.
pub const PER_PROCESS: usize = 17_000;

/// What one `scale` run does.
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    pub connections: usize,
    pub broadcasts: usize,
    /// Time between broadcasts; also how long the last one is given to arrive.
    pub interval: Duration,
    /// How long all connections may take to open.
    pub connect_timeout: Duration,
}

impl ScaleOptions {
    /// 100,000 connections, or a few hundred over two processes of each kind for the smoke test.
    pub fn new(smoke: bool) -> ScaleOptions {
        ScaleOptions {
            connections: if smoke { 400 } else { 100_000 },
            broadcasts: if smoke { 2 } else { 5 },
            interval: Duration::from_secs(if smoke { 1 } else { 3 }),
            connect_timeout: Duration::from_secs(600),
        }
    }
}

/// Microseconds of the system clock: every process on the machine reads the same one.
fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The marker every payload carries: `@` and 16 digits, as `client::markers` reads it.
fn stamped_payload(broadcast: usize) -> String {
    format!("@{:016}#{broadcast}", wall_micros())
}

/// Splits `total` into `parts` shares that differ by at most one.
fn shares(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

fn processes_for(connections: usize) -> usize {
    connections.div_ceil(PER_PROCESS).max(2)
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
fn raise_file_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed in.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}

/// A generator process: its pid, its commands and its lines.
struct Generator {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Generator {
    fn spawn(ports: &[u16], count: usize, source: &str) -> Result<Generator, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut child = Command::new(exe)
            .args(["scale-client", "--ports", &ports.join(",")])
            .args(["--count", &count.to_string(), "--source", source])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("scale-client does not start: {e}"))?;
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Ok(Generator {
            child,
            stdin,
            lines,
        })
    }

    /// The next line that starts with `prefix`, without it.
    async fn expect(&mut self, prefix: &str) -> Result<String, String> {
        while let Some(line) = self.lines.next_line().await.map_err(|e| e.to_string())? {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok(rest.trim().to_owned());
            }
        }
        Err(format!("a generator ended before it said {prefix}"))
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// The run. Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`).
pub async fn run(options: &ScaleOptions) -> Result<Value, String> {
    raise_file_limit();
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("Bench.Scale.{}", std::process::id());
    let processes = processes_for(options.connections);
    eprintln!(
        "scale: {} connections over {processes} server processes and {processes} generators",
        options.connections
    );
    let env = [
        ("SIGNALR_BENCH_REDIS", redis.as_str()),
        ("SIGNALR_BENCH_REDIS_PREFIX", prefix.as_str()),
    ];
    let mut servers = Vec::new();
    for _ in 0..processes {
        servers.push(servers::start_spread("ours", &env).await?);
    }
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before: u64 = servers.iter().map(|s| rss_kib(s.pid())).sum();

    let began = Instant::now();
    let mut generators = Vec::new();
    for (i, count) in shares(options.connections, processes)
        .into_iter()
        .enumerate()
    {
        generators.push(Generator::spawn(
            &ports,
            count,
            &format!("127.0.0.{}", 10 + i),
        )?);
    }
    let mut opened = 0usize;
    let mut failed = 0usize;
    for generator in &mut generators {
        let ready = tokio::time::timeout(options.connect_timeout, generator.expect("READY"))
            .await
            .map_err(|_| "the connections did not open in time".to_string())??;
        let mut numbers = ready
            .split_whitespace()
            .map(|n| n.parse::<usize>().unwrap_or(0));
        opened += numbers.next().unwrap_or(0);
        failed += numbers.next().unwrap_or(0);
    }
    let connect_seconds = began.elapsed().as_secs_f64();
    eprintln!("  {opened} connections open in {connect_seconds:.1} s ({failed} failed)");
    // Let the servers' registries and the allocators settle before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after: Vec<u64> = servers.iter().map(|s| rss_kib(s.pid())).collect();
    let server_rss_kib: u64 = rss_after.iter().sum();
    let generator_rss_kib: u64 = generators.iter().map(|g| rss_kib(g.pid())).sum();

    let mut control = client::connect(ports[0], "ours", Protocol::Json, None).await?;
    let wire = Wire::SignalR(Protocol::Json);
    let mut sent_at = Vec::new();
    for broadcast in 0..options.broadcasts {
        let payload = stamped_payload(broadcast);
        sent_at.push(markers(payload.as_bytes()).next().unwrap_or(0));
        control
            .send(wire.call("Broadcast", &[&payload], None))
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("  broadcast {} sent", broadcast + 1);
        drain_for(&mut control, options.interval).await;
    }
    drain_for(&mut control, options.interval).await;

    let mut latencies: Vec<u64> = Vec::new();
    let mut per_broadcast_last = vec![0u64; options.broadcasts];
    let mut lost = 0usize;
    for generator in &mut generators {
        generator
            .stdin
            .write_all(b"REPORT\n")
            .await
            .map_err(|e| e.to_string())?;
        let report: Value = serde_json::from_str(&generator.expect("REPORT").await?)
            .map_err(|e| format!("a generator's report: {e}"))?;
        lost += report["lost"].as_u64().unwrap_or(0) as usize;
        for pair in report["deliveries"].as_array().into_iter().flatten() {
            let (Some(at), Some(received)) = (pair[0].as_u64(), pair[1].as_u64()) else {
                continue;
            };
            let Some(index) = sent_at.iter().position(|&sent| sent == at) else {
                continue;
            };
            let latency = received.saturating_sub(at);
            latencies.push(latency);
            per_broadcast_last[index] = per_broadcast_last[index].max(latency);
        }
    }
    drop(generators);
    drop(servers);
    let _ = control.close(None).await;

    latencies.sort_unstable();
    let expected = opened * options.broadcasts;
    let ms = |us: u64| us as f64 / 1e3;
    Ok(json!({
        "machine": crate::machine(),
        "allocator": crate::allocator(),
        "connections_asked": options.connections,
        "connections_opened": opened,
        "connections_failed": failed,
        "connections_lost_before_report": lost,
        "server_processes": processes,
        "generator_processes": processes,
        "connect_seconds": connect_seconds,
        "broadcasts": options.broadcasts,
        "deliveries_expected": expected,
        "deliveries": latencies.len(),
        "latency_p50_ms": quantile(&latencies, 0.50) / 1e3,
        "latency_p99_ms": quantile(&latencies, 0.99) / 1e3,
        "latency_max_ms": ms(latencies.last().copied().unwrap_or(0)),
        "last_delivery_ms_per_broadcast": per_broadcast_last.iter().map(|&us| ms(us)).collect::<Vec<_>>(),
        "server_rss_kib_before": rss_before,
        "server_rss_kib": server_rss_kib,
        "server_rss_kib_per_process": rss_after,
        "server_rss_bytes_per_connection": (server_rss_kib.saturating_sub(rss_before) as f64 * 1024.0) / opened.max(1) as f64,
        "generator_rss_kib": generator_rss_kib,
    }))
}

/// Reads (and discards) what the control connection receives for `period`.
async fn drain_for(socket: &mut client::Socket, period: Duration) {
    let _ = tokio::time::timeout(period, async {
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
}

/// The human-readable form of a report.
pub fn print(report: &Value) {
    let f = |key: &str| report[key].as_f64().unwrap_or(0.0);
    println!("machine: {}", report["machine"].as_str().unwrap_or(""));
    println!("allocator: {}", report["allocator"].as_str().unwrap_or(""));
    println!(
        "{} of {} connections open in {:.1} s ({} failed, {} lost before the report), {} server \
         processes joined by Redis, {} generator processes",
        report["connections_opened"],
        report["connections_asked"],
        f("connect_seconds"),
        report["connections_failed"],
        report["connections_lost_before_report"],
        report["server_processes"],
        report["generator_processes"],
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| deliveries / expected | {} / {} |",
        report["deliveries"], report["deliveries_expected"]
    );
    println!("| broadcast latency p50 | {:.1} ms |", f("latency_p50_ms"));
    println!("| broadcast latency p99 | {:.1} ms |", f("latency_p99_ms"));
    println!("| broadcast latency max | {:.1} ms |", f("latency_max_ms"));
    let last: Vec<String> = report["last_delivery_ms_per_broadcast"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| format!("{:.0}", v.as_f64().unwrap_or(0.0)))
        .collect();
    println!(
        "| last delivery of each broadcast | {} ms |",
        last.join(", ")
    );
    println!(
        "| server RSS, all processes | {:.0} MiB (from {:.0} MiB with no connections) |",
        f("server_rss_kib") / 1024.0,
        f("server_rss_kib_before") / 1024.0
    );
    println!(
        "| server RSS per connection | {:.0} bytes |",
        f("server_rss_bytes_per_connection")
    );
    println!(
        "| generators' RSS, all processes | {:.0} MiB |",
        f("generator_rss_kib") / 1024.0
    );
}

/// What one generator's connections have received: (send time, arrival time) per delivery.
#[derive(Default)]
struct Received {
    deliveries: Mutex<Vec<(u64, u64)>>,
    lost: AtomicU64,
}

/// `signalr-bench scale-client --ports P1,P2,… --count N --source ADDRESS`: opens N connections
/// spread over the ports, says `READY <opened> <failed>`, then on `REPORT` on its input prints
/// `REPORT {json}` and exits.
pub async fn client_main(ports: Vec<u16>, count: usize, source: std::net::IpAddr) {
    raise_file_limit();
    let received = Arc::new(Received::default());
    let mut tasks = Vec::with_capacity(count);
    let mut failed = 0usize;
    // At most this many handshakes in flight, well under the servers' listen backlogs.
    const IN_FLIGHT: usize = 64;
    let mut pending = futures_util::stream::iter((0..count).map(|i| {
        let port = ports[i % ports.len()];
        open(source, port)
    }))
    .buffer_unordered(IN_FLIGHT);
    while let Some(outcome) = pending.next().await {
        match outcome {
            Ok(socket) => tasks.push(tokio::spawn(hold(socket, received.clone()))),
            Err(e) => {
                if failed == 0 {
                    eprintln!("scale-client {source}: {e}");
                }
                failed += 1;
            }
        }
    }
    drop(pending);
    println!("READY {} {failed}", tasks.len());
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = input.next_line().await {
        if line.trim() == "REPORT" {
            break;
        }
    }
    let lost = received.lost.load(Ordering::Relaxed)
        + tasks.iter().filter(|task| task.is_finished()).count() as u64;
    let deliveries = std::mem::take(&mut *received.deliveries.lock().expect("deliveries"));
    let pairs: Vec<[u64; 2]> = deliveries.into_iter().map(|(a, b)| [a, b]).collect();
    println!(
        "REPORT {}",
        json!({ "opened": tasks.len(), "lost": lost, "deliveries": pairs })
    );
    for task in tasks {
        task.abort();
    }
}

/// One connection from `source`: TCP, the WebSocket upgrade (skip-negotiation), the JSON
/// handshake.
async fn open(source: std::net::IpAddr, port: u16) -> Result<WebSocketStream<TcpStream>, String> {
    let attempt = async {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        defer_port_choice(&socket);
        socket
            .bind((source, 0).into())
            .map_err(|e| format!("bind {source}: {e}"))?;
        let stream = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let url = format!("ws://127.0.0.1:{port}/hub");
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(servers::ws_config()))
                .await
                .map_err(|e| format!("upgrade: {e}"))?;
        ws.send(Ws::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
            .await
            .map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(Ws::Text(text))) if text.as_str() == "{}\u{1e}" => Ok(ws),
            other => Err(format!("handshake answered with {other:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(60), attempt)
        .await
        .map_err(|_| "opening timed out".to_string())?
}

/// Lets the kernel pick the source port at `connect`, for the destination at hand, instead
/// of at `bind`, where it must find a port free for every destination: with tens of
/// thousands of sockets per source address that search is what made opening them slow.
fn defer_port_choice(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: the descriptor is the socket's own, and the option value is a c_int that
        // lives across the call.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Keeps one connection: a ping every 15 s (the official clients' keep-alive interval), each
/// broadcast's arrival noted.
async fn hold(mut ws: WebSocketStream<TcpStream>, received: Arc<Received>) {
    let ping = Ws::text("{\"type\":6}\u{1e}");
    // Spread the pings over the interval, so 100,000 connections do not ping at once.
    let offset = Duration::from_millis(wall_micros() % 15_000);
    let mut keep_alive = tokio::time::interval_at(
        tokio::time::Instant::now() + offset,
        Duration::from_secs(15),
    );
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Ws::Text(text))) => {
                    let now = wall_micros();
                    // Pings carry no marker; a frame may hold several records.
                    let mut deliveries = received.deliveries.lock().expect("deliveries");
                    deliveries.extend(markers(text.as_bytes()).map(|at| (at, now)));
                }
                Some(Ok(_)) => {}
                _ => {
                    received.lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            _ = keep_alive.tick() => {
                if ws.send(ping.clone()).await.is_err() {
                    received.lost.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for (total, parts) in [(100_000, 6), (400, 2), (5, 3), (17_000, 1)] {
            let s = shares(total, parts);
            assert_eq!(s.len(), parts);
            assert_eq!(s.iter().sum::<usize>(), total);
            let (min, max) = (s.iter().min().unwrap(), s.iter().max().unwrap());
            assert!(max - min <= 1, "{s:?}");
        }
    }

    #[test]
    fn each_process_stays_under_the_file_limit() {
        assert_eq!(processes_for(100_000), 6);
        assert_eq!(processes_for(400), 2);
        for n in [1usize, 16_999, 17_001, 100_000, 250_000] {
            assert!(n.div_ceil(processes_for(n)) <= PER_PROCESS, "{n}");
        }
    }

    #[test]
    fn stamped_payloads_carry_a_marker_the_generator_reads() {
        let before = wall_micros();
        let payload = stamped_payload(3);
        let at: Vec<u64> = markers(payload.as_bytes()).collect();
        assert_eq!(at.len(), 1, "{payload}");
        assert!(at[0] >= before && at[0] <= wall_micros(), "{payload}");
    }
}
