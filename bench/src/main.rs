//! `signalr-bench`: one load generator, speaking the SignalR protocol itself, driving our hub
//! and a raw WebSocket echo server (the ceiling any protocol layer can approach) side by side in
//! one run, so that every figure can be read as a ratio on a noisy machine.
//!
//! ```text
//! signalr-bench run [--smoke] [--json]   # every scenario, 3 repetitions, a table (or JSON)
//! signalr-bench serve ours|raw           # one server; prints "LISTENING <port>"
//! ```
//! Servers run as child processes pinned to core 0 when `taskset` exists; run the generator
//! on another core (`taskset -c 1 signalr-bench run`) for the cleanest figures.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signalr_core::protocol::{Headers, Invocation, Message, NoValue, Protocol};
use signalr_core::Hub;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(args.get(1).map(String::as_str).unwrap_or("ours")).await,
        Some("run") => {
            let smoke = args.iter().any(|a| a == "--smoke");
            let as_json = args.iter().any(|a| a == "--json");
            let report = run(smoke).await;
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_table(&report);
            }
        }
        _ => {
            eprintln!("usage: signalr-bench run [--smoke] [--json] | signalr-bench serve ours|raw");
            std::process::exit(2);
        }
    }
}

/// The hub under test: `Echo` returns its argument.
async fn echo(value: signalr_core::protocol::Payload) -> signalr_core::protocol::Payload {
    value
}

async fn serve(target: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!(
        "LISTENING {}",
        listener.local_addr().expect("address").port()
    );
    match target {
        "ours" => {
            let hub = Hub::builder().method("Echo", echo).build();
            let _ =
                signalr_core::serve_with_shutdown(listener, "/hub", hub, std::future::pending())
                    .await;
        }
        _ => loop {
            // The baseline: the same tungstenite buffer settings, echoing every frame.
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let config = WebSocketConfig::default()
                    .read_buffer_size(4 * 1024)
                    .write_buffer_size(8 * 1024);
                let Ok(mut ws) =
                    tokio_tungstenite::accept_async_with_config(stream, Some(config)).await
                else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        },
    }
}

/// A server child process; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(target: &str) -> Server {
    let exe = std::env::current_exe().expect("own path");
    let pinned = Command::new("taskset").arg("--version").output().is_ok();
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let mut child = command
        .args(["serve", target])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let stdout = tokio::process::ChildStdout::from_std(stdout).expect("async stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("LISTENING line");
    let port = line
        .trim()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .expect("a port");
    Server { child, port }
}

/// What one request looks like on the wire, for a target and protocol.
fn request(protocol: Protocol) -> Ws {
    let payload = "x".repeat(32);
    let message: Message<(&str,), NoValue> = Message::Invocation(Invocation {
        headers: Headers::new(),
        invocation_id: Some("1".into()),
        target: "Echo".into(),
        arguments: (&payload,),
        stream_ids: Vec::new(),
    });
    let record = protocol.encode_to_bytes(&message).expect("encodes");
    match protocol {
        Protocol::Json => Ws::text(String::from_utf8(record.to_vec()).expect("utf-8")),
        Protocol::MessagePack => Ws::binary(record),
    }
}

async fn connect(port: u16, target: &str, protocol: Protocol) -> Socket {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/hub"))
        .await
        .expect("connects");
    if target == "ours" {
        let handshake = format!(
            "{{\"protocol\":\"{}\",\"version\":1}}\u{1e}",
            protocol.name()
        );
        socket
            .send(Ws::text(handshake))
            .await
            .expect("handshake sent");
        socket
            .next()
            .await
            .expect("handshake answer")
            .expect("handshake answer");
    }
    socket
}

/// Waits for the next reply frame (pings, which only our hub sends, are skipped).
async fn reply(socket: &mut Socket, protocol: Protocol) -> bool {
    let ping = protocol.ping_record();
    loop {
        match socket.next().await {
            Some(Ok(Ws::Text(text))) if text.as_bytes() != ping.as_ref() => return true,
            Some(Ok(Ws::Binary(data))) if data != ping => return true,
            Some(Ok(_)) => continue,
            _ => return false,
        }
    }
}

struct Echo {
    messages_per_second: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    cpu_seconds_per_million: f64,
}

/// CPU time (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Closed loop: each connection sends, waits for the reply, and sends again.
async fn echo_scenario(
    server: &Server,
    target: &str,
    protocol: Protocol,
    connections: usize,
    warmup: Duration,
    window: Duration,
) -> Echo {
    let mut tasks = Vec::new();
    let start = Instant::now() + warmup;
    let end = start + window;
    let frame = request(protocol);
    let mut sockets = Vec::new();
    for _ in 0..connections {
        sockets.push(connect(server.port, target, protocol).await);
    }
    let cpu_at_start = tokio::spawn({
        let pid = server.child.id();
        async move {
            tokio::time::sleep_until(start.into()).await;
            cpu_seconds(pid)
        }
    });
    for mut socket in sockets {
        let frame = frame.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end
                    || socket.send(frame.clone()).await.is_err()
                    || !reply(&mut socket, protocol).await
                {
                    break;
                }
                if sent >= start {
                    latencies.push(sent.elapsed().as_micros() as u64);
                }
            }
            latencies
        }));
    }
    let cpu_before = cpu_at_start.await.unwrap_or(0.0);
    let mut latencies: Vec<u64> = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let cpu = (cpu_seconds(server.child.id()) - cpu_before).max(0.0);
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let count = latencies.len() as f64;
    Echo {
        messages_per_second: count / window.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        cpu_seconds_per_million: if count > 0.0 {
            cpu / (count / 1e6)
        } else {
            0.0
        },
    }
}

/// Server memory per idle connection (ours after the handshake and a ping).
async fn idle_scenario(target: &str, connections: usize) -> f64 {
    let server = start(target).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(server.child.id());
    let mut sockets = Vec::new();
    for _ in 0..connections {
        let mut socket = connect(server.port, target, Protocol::Json).await;
        if target == "ours" {
            let _ = socket.send(Ws::text("{\"type\":6}\u{1e}")).await;
        }
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(server.child.id());
    drop(sockets);
    (after.saturating_sub(before) as f64 * 1024.0) / connections as f64
}

fn stats(values: &mut [f64]) -> Value {
    values.sort_by(|a, b| a.total_cmp(b));
    json!({"median": values[values.len() / 2], "min": values[0], "max": values[values.len() - 1]})
}

async fn run(smoke: bool) -> Value {
    let (reps, connections, warmup, window, idle) = if smoke {
        (
            1,
            10,
            Duration::from_millis(200),
            Duration::from_secs(1),
            100,
        )
    } else {
        (3, 100, Duration::from_secs(1), Duration::from_secs(5), 5000)
    };
    let mut scenarios = Vec::new();
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let mut per_target = serde_json::Map::new();
        for target in ["ours", "raw"] {
            let (mut rate, mut p50, mut p99, mut p999, mut cpu) =
                (vec![], vec![], vec![], vec![], vec![]);
            for _ in 0..reps {
                let server = start(target).await;
                let echo =
                    echo_scenario(&server, target, protocol, connections, warmup, window).await;
                eprintln!(
                    "  echo {protocol} {target}: {:.0} msg/s, p99 {} us",
                    echo.messages_per_second, echo.p99_us
                );
                rate.push(echo.messages_per_second);
                p50.push(echo.p50_us as f64);
                p99.push(echo.p99_us as f64);
                p999.push(echo.p999_us as f64);
                cpu.push(echo.cpu_seconds_per_million);
            }
            per_target.insert(
                target.into(),
                json!({
                    "messages_per_second": stats(&mut rate),
                    "p50_us": stats(&mut p50),
                    "p99_us": stats(&mut p99),
                    "p999_us": stats(&mut p999),
                    "server_cpu_seconds_per_million": stats(&mut cpu),
                }),
            );
        }
        scenarios.push(json!({"scenario": format!("echo, {connections} connections, closed loop, {protocol}"), "results": per_target}));
    }
    let mut per_target = serde_json::Map::new();
    for target in ["ours", "raw"] {
        let mut bytes = Vec::new();
        for _ in 0..reps {
            bytes.push(idle_scenario(target, idle).await);
        }
        eprintln!("  idle {target}: {:.0} bytes/connection", bytes[0]);
        per_target.insert(
            target.into(),
            json!({"rss_bytes_per_connection": stats(&mut bytes)}),
        );
    }
    scenarios.push(
        json!({"scenario": format!("idle WebSocket connections ({idle})"), "results": per_target}),
    );
    json!({
        "machine": format!("{} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        "repetitions": reps,
        "window_seconds": window.as_secs_f64(),
        "scenarios": scenarios,
    })
}

fn print_table(report: &Value) {
    println!("| scenario | metric | ours (median [min-max]) | raw baseline | ours / raw |");
    println!("|---|---|---|---|---|");
    for scenario in report["scenarios"].as_array().into_iter().flatten() {
        let results = &scenario["results"];
        for (metric, value) in results["ours"].as_object().into_iter().flatten() {
            let raw = &results["raw"][metric];
            let ratio = value["median"].as_f64().unwrap_or(0.0)
                / raw["median"].as_f64().unwrap_or(1.0).max(f64::MIN_POSITIVE);
            println!(
                "| {} | {metric} | {:.1} [{:.1}-{:.1}] | {:.1} | {:.2} |",
                scenario["scenario"].as_str().unwrap_or(""),
                value["median"].as_f64().unwrap_or(0.0),
                value["min"].as_f64().unwrap_or(0.0),
                value["max"].as_f64().unwrap_or(0.0),
                raw["median"].as_f64().unwrap_or(0.0),
                ratio
            );
        }
    }
}
