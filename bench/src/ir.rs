//! `signalr-bench ir`: server instructions and allocations per message, counted by callgrind
//! with a fixed amount of work, so the figures do not depend on what else the machine is doing.
//!
//! Each server (ours, the raw tokio-tungstenite baseline, socketioxide) runs under
//! `valgrind --tool=callgrind` twice per scenario: once for K units of work and once for 2K.
//! The difference of the two totals, divided by the extra work, is what one message costs:
//! start-up, connecting, the handshake and shutdown are in both runs and cancel out.
//! Allocations are the calls to the allocator's entry points (`malloc`, `calloc`, `realloc`,
//! `posix_memalign`, `aligned_alloc`, and jemalloc's `mallocx`/`rallocx`) in the same profile,
//! differenced the same way.
//!
//! The work (`signalr-bench work SCENARIO TARGET PORT K` drives it against any running server):
//! - `echo json` / `echo messagepack`: 10 connections, each making exactly K `Echo` round trips
//!   one after the other (raw: K frames echoed; socketioxide: K `Echo` events answered by an
//!   `Echo` emit). A unit is one echo.
//! - `broadcast`: 1,000 connections; one of them calls `Broadcast` K times in lockstep (the next
//!   only when all 1,000 have received the last); a unit is one delivery.
//! - `echo over long polling, json`: 10 long-polling connections (ours only), each making K
//!   `Echo` round trips: a POST, and the answer on the pending poll. Compared with our own
//!   `echo json` over WebSockets in the same run.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signalr_core::protocol::Protocol;
use tokio::sync::Notify;

use crate::client::{self, Wire};
use crate::servers;

/// The payload of every message: the length of the wall-clock benchmark's marker payload.
const PAYLOAD: &str = "@0000000000000000xxxxxxxxxxxxxxx";

/// One fixed-work scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Echo(Protocol),
    Broadcast,
    EchoLongPolling,
}

impl Work {
    pub fn name(self) -> &'static str {
        match self {
            Work::Echo(Protocol::Json) => "echo json",
            Work::Echo(_) => "echo messagepack",
            Work::Broadcast => "broadcast",
            Work::EchoLongPolling => "echo over long polling, json",
        }
    }

    pub fn parse(name: &str) -> Option<Work> {
        [
            Work::Echo(Protocol::Json),
            Work::Echo(Protocol::MessagePack),
            Work::Broadcast,
            Work::EchoLongPolling,
        ]
        .into_iter()
        .find(|w| w.name().replace(' ', "-") == name.replace(' ', "-"))
    }

    /// Connections the work runs over.
    pub fn connections(self) -> usize {
        match self {
            Work::Echo(_) | Work::EchoLongPolling => ECHO_CONNECTIONS,
            Work::Broadcast => BROADCAST_SUBSCRIBERS,
        }
    }

    /// Units of work (echoes, deliveries) in a run of `k`.
    pub fn units(self, k: u64) -> u64 {
        k * self.connections() as u64
    }

    fn protocol(self) -> Protocol {
        match self {
            Work::Echo(protocol) => protocol,
            Work::Broadcast | Work::EchoLongPolling => Protocol::Json,
        }
    }

    /// The targets the scenario is measured on (socketioxide has no MessagePack in the
    /// Socket.IO peer's setup either).
    fn targets(self) -> &'static [&'static str] {
        match self {
            Work::Echo(Protocol::MessagePack) => &["ours", "raw"],
            Work::EchoLongPolling => &["ours"],
            _ => &["ours", "raw", "socketioxide"],
        }
    }

    /// K for the shorter of the two runs.
    fn default_k(self) -> u64 {
        match self {
            Work::Echo(_) => 500,
            Work::Broadcast => 20,
            Work::EchoLongPolling => 200,
        }
    }
}

const ECHO_CONNECTIONS: usize = 10;
const BROADCAST_SUBSCRIBERS: usize = 1_000;

/// Drives exactly `k` units per connection of `work` against `target` on `port`, then closes
/// every connection gracefully.
pub async fn fixed_work(work: Work, target: &str, port: u16, k: u64) -> Result<(), String> {
    if work == Work::EchoLongPolling {
        return long_polling_echoes(port, k).await;
    }
    let protocol = work.protocol();
    let wire = Wire::of(target, protocol);
    let room = (target == "raw" && work == Work::Broadcast).then_some("bench");
    let mut sockets = Vec::with_capacity(work.connections());
    for _ in 0..work.connections() {
        sockets.push(client::connect(port, target, protocol, room).await?);
    }
    match work {
        // Long polling has its own driver (above); the rest of the echoes are WebSockets.
        Work::Echo(_) | Work::EchoLongPolling => {
            let tasks: Vec<_> = sockets
                .into_iter()
                .map(|mut socket| {
                    tokio::spawn(async move {
                        for id in 0..k {
                            let call = wire.call("Echo", &[PAYLOAD], Some(id));
                            socket.send(call).await.map_err(|e| e.to_string())?;
                            client::next_answer(&mut socket, wire).await?;
                        }
                        let _ = socket.close(None).await;
                        Ok::<_, String>(())
                    })
                })
                .collect();
            for task in tasks {
                task.await.map_err(|e| e.to_string())??;
            }
        }
        Work::Broadcast => {
            let received = Arc::new(AtomicU64::new(0));
            let progress = Arc::new(Notify::new());
            let mut senders = Vec::new();
            let mut readers = Vec::new();
            for socket in sockets {
                let (sink, mut stream) = socket.split();
                senders.push(sink);
                let (received, progress) = (received.clone(), progress.clone());
                readers.push(tokio::spawn(async move {
                    let mut seen = 0;
                    while seen < k {
                        match stream.next().await {
                            Some(Ok(frame)) if wire.is_ping(&frame) => continue,
                            Some(Ok(frame)) if client::frame_bytes(&frame).is_some() => {
                                seen += 1;
                                received.fetch_add(1, Ordering::Relaxed);
                                progress.notify_one();
                            }
                            Some(Ok(_)) => continue,
                            _ => return Err(format!("closed after {seen} of {k} broadcasts")),
                        }
                    }
                    Ok(stream)
                }));
            }
            let subscribers = readers.len() as u64;
            let publisher = &mut senders[0];
            for round in 1..=k {
                let call = wire.call("Broadcast", &[PAYLOAD], None);
                publisher.send(call).await.map_err(|e| e.to_string())?;
                // Lockstep: the next broadcast only when every subscriber has this one.
                let wait = async {
                    while received.load(Ordering::Relaxed) < round * subscribers {
                        progress.notified().await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(120), wait)
                    .await
                    .map_err(|_| format!("broadcast {round} of {k} was not delivered to all"))?;
            }
            for (reader, sink) in readers.into_iter().zip(senders) {
                let stream = reader.await.map_err(|e| e.to_string())??;
                if let Ok(mut socket) = sink.reunite(stream) {
                    let _ = socket.close(None).await;
                }
            }
        }
    }
    // A moment for the server to see the closes inside the profile of both runs alike.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// `echo over long polling, json`: each of the connections posts `Echo` and waits for its
/// Completion on the poll, K times, then leaves with a DELETE.
async fn long_polling_echoes(port: u16, k: u64) -> Result<(), String> {
    let http = client::http_client()?;
    let mut connections = Vec::with_capacity(ECHO_CONNECTIONS);
    for _ in 0..ECHO_CONNECTIONS {
        connections.push(client::HttpConnection::long_polling(&http, port).await?);
    }
    let wire = Wire::SignalR(Protocol::Json);
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            tokio::spawn(async move {
                for id in 0..k {
                    let call = wire.call("Echo", &[PAYLOAD], Some(id));
                    let body = client::frame_bytes(&call).unwrap_or_default().to_vec();
                    connection.send(body).await?;
                    loop {
                        let answer = tokio::time::timeout(
                            Duration::from_secs(60),
                            connection.received.recv(),
                        )
                        .await
                        .map_err(|_| format!("no answer to echo {id}"))?
                        .ok_or("the poll ended")?;
                        if holds_completion(&answer) {
                            break;
                        }
                    }
                }
                connection.close().await
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Whether a poll's body holds a Completion (`"type":3`).
fn holds_completion(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"type\":3").is_some()
}

/// What one callgrind run counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub instructions: u64,
    pub allocations: u64,
}

/// Whether a function name is one of the allocator's entry points that hand out a block.
fn is_allocation(name: &str) -> bool {
    let name = name.split('\'').next().unwrap_or(name);
    let name = name.strip_prefix("_rjem_").unwrap_or(name);
    matches!(
        name,
        "malloc"
            | "calloc"
            | "realloc"
            | "posix_memalign"
            | "aligned_alloc"
            | "memalign"
            | "mallocx"
            | "rallocx"
    )
}

/// Reads a callgrind output file: the total instructions and the calls into the allocator.
/// Function names may be compressed (`cfn=(7) malloc` once, `cfn=(7)` afterwards).
pub fn parse_callgrind(text: &str) -> Result<Profile, String> {
    let mut names: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut callee_allocates = false;
    let mut profile = Profile::default();
    let mut total = None;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("fn=")
            .or_else(|| line.strip_prefix("cfn="))
        {
            let name = match rest.strip_prefix('(') {
                Some(compressed) => {
                    let (id, name) = compressed.split_once(')').unwrap_or((compressed, ""));
                    let name = name.trim();
                    if !name.is_empty() {
                        names.insert(id, name);
                    }
                    names.get(id).copied().unwrap_or("")
                }
                None => rest.trim(),
            };
            if line.starts_with("cfn=") {
                callee_allocates = is_allocation(name);
            }
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if callee_allocates {
                let count = rest.split_whitespace().next().unwrap_or("0");
                profile.allocations += count.parse::<u64>().unwrap_or(0);
            }
        } else if let Some(rest) = line
            .strip_prefix("totals:")
            .or_else(|| line.strip_prefix("summary:"))
        {
            let first = rest.split_whitespace().next().unwrap_or("");
            total = first.parse::<u64>().ok().or(total);
        }
    }
    profile.instructions = total.ok_or("no totals in the callgrind output")?;
    Ok(profile)
}

/// Runs `target` under callgrind for `k` units of `work` and reads the profile.
async fn profile(work: Work, target: &str, k: u64) -> Result<Profile, String> {
    let out = std::env::temp_dir().join(format!(
        "signalr-bench-ir-{}-{}-{target}-{k}.out",
        std::process::id(),
        work.name().replace(' ', "-")
    ));
    let wrap = vec![
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let server = servers::start_under(target, wrap, &[]).await?;
    let port = server.port;
    let driven = fixed_work(work, target, port, k).await;
    // Dropping the server sends SIGTERM and waits for callgrind to write its file.
    drop(server);
    driven?;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    parse_callgrind(&text)
}

/// Per-unit figures from the K and 2K runs.
fn per_unit(short: Profile, long: Profile, extra_units: u64) -> Value {
    let per = |a: u64, b: u64| (b as f64 - a as f64) / extra_units as f64;
    json!({
        "ir_per_message": per(short.instructions, long.instructions).round(),
        "allocs_per_message": (per(short.allocations, long.allocations) * 100.0).round() / 100.0,
        "runs": {
            "short": {"instructions": short.instructions, "allocations": short.allocations},
            "long": {"instructions": long.instructions, "allocations": long.allocations},
        },
    })
}

pub struct IrOptions {
    pub only: Option<String>,
    /// Multiplies every scenario's K.
    pub scale: u64,
}

pub async fn run(options: &IrOptions) -> Result<Value, String> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Err("valgrind is not installed (apt-get install valgrind)".into());
    }
    let mut scenarios: Vec<Value> = Vec::new();
    for work in [
        Work::Echo(Protocol::Json),
        Work::Echo(Protocol::MessagePack),
        Work::Broadcast,
        Work::EchoLongPolling,
    ] {
        if options
            .only
            .as_ref()
            .is_some_and(|only| !work.name().contains(only.as_str()))
        {
            continue;
        }
        let k = work.default_k() * options.scale.max(1);
        let mut results = serde_json::Map::new();
        for &target in work.targets() {
            eprintln!("ir: {} on {target}: K = {k} and {}", work.name(), 2 * k);
            let short = profile(work, target, k).await?;
            let long = profile(work, target, 2 * k).await?;
            results.insert(target.into(), per_unit(short, long, work.units(k)));
        }
        let ratio = |other: &str| {
            let ours = results["ours"]["ir_per_message"].as_f64()?;
            let theirs = results.get(other)?["ir_per_message"].as_f64()?;
            (theirs > 0.0).then(|| (ours / theirs * 100.0).round() / 100.0)
        };
        let mut ratios =
            json!({"ours/raw": ratio("raw"), "ours/socketioxide": ratio("socketioxide")});
        if work == Work::EchoLongPolling {
            // Against our own WebSocket echo, when this run measured it too.
            let websocket = scenarios
                .iter()
                .find(|s| s["scenario"] == Work::Echo(Protocol::Json).name())
                .and_then(|s| s["results"]["ours"]["ir_per_message"].as_f64());
            let ours = results["ours"]["ir_per_message"].as_f64();
            if let (Some(ours), Some(websocket)) = (ours, websocket.filter(|&w| w > 0.0)) {
                ratios["long polling/websockets"] =
                    json!((ours / websocket * 100.0).round() / 100.0);
            }
        }
        let name = match work {
            Work::Broadcast => format!("broadcast to {BROADCAST_SUBSCRIBERS}"),
            _ => work.name().to_string(),
        };
        scenarios.push(json!({
            "scenario": name,
            "unit": if work == Work::Broadcast { "delivery" } else { "echo" },
            "connections": work.connections(),
            "k": [k, 2 * k],
            "results": results,
            "ratios": ratios,
        }));
    }
    Ok(json!({
        "machine": crate::machine(),
        "allocator": crate::allocator(),
        "scenarios": scenarios,
    }))
}

/// The table of an `ir` report.
pub fn print(report: &Value) {
    println!("machine: {}", report["machine"].as_str().unwrap_or(""));
    println!("allocator: {}", report["allocator"].as_str().unwrap_or(""));
    println!("| scenario | figure | ours | raw | socketioxide | ours/raw | ours/socketioxide |");
    println!("|---|---|---|---|---|---|---|");
    for scenario in report["scenarios"].as_array().into_iter().flatten() {
        let results = &scenario["results"];
        let unit = scenario["unit"].as_str().unwrap_or("message");
        for (figure, label) in [
            ("ir_per_message", format!("instructions per {unit}")),
            ("allocs_per_message", format!("allocations per {unit}")),
        ] {
            let cell = |target: &str| match results[target][figure].as_f64() {
                Some(v) if figure == "ir_per_message" => format!("{v:.0}"),
                Some(v) => format!("{v:.2}"),
                None => "–".into(),
            };
            let ratio = |target: &str| match (
                results["ours"][figure].as_f64(),
                results[target][figure].as_f64(),
            ) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "–".into(),
            };
            println!(
                "| {} | {label} | {} | {} | {} | {} | {} |",
                scenario["scenario"].as_str().unwrap_or(""),
                cell("ours"),
                cell("raw"),
                cell("socketioxide"),
                ratio("raw"),
                ratio("socketioxide"),
            );
        }
    }
    for scenario in report["scenarios"].as_array().into_iter().flatten() {
        if let Some(ratio) = scenario["ratios"]["long polling/websockets"].as_f64() {
            println!(
                "{}: {ratio:.2}× our WebSocket JSON echo in instructions",
                scenario["scenario"].as_str().unwrap_or("")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callgrind_totals_and_allocator_calls_are_read_compressed_or_not() {
        let text = "\
version: 1
events: Ir
fn=(1) main
0 10
cfn=(2) malloc
calls=3 0
0 300
cfn=(3) free
calls=3 0
0 90
cfn=(2)
calls=2 0
0 200
fn=(4) grow
cfn=(5) realloc'2
calls=1 0
0 50
cfn=other_fn
calls=7 0
0 70
cfn=_rjem_mallocx
calls=4 0
0 40
totals: 12345
";
        assert_eq!(
            parse_callgrind(text),
            Ok(Profile {
                instructions: 12345,
                allocations: 3 + 2 + 1 + 4
            })
        );
        assert!(parse_callgrind("events: Ir\n").is_err());
    }

    #[test]
    fn scenario_names_round_trip() {
        for work in [
            Work::Echo(Protocol::Json),
            Work::Echo(Protocol::MessagePack),
            Work::Broadcast,
        ] {
            assert_eq!(Work::parse(work.name()), Some(work));
            assert_eq!(Work::parse(&work.name().replace(' ', "-")), Some(work));
        }
        assert_eq!(Work::parse("echo xml"), None);
    }

    #[test]
    fn figures_are_the_difference_per_extra_unit() {
        let short = Profile {
            instructions: 1_000_000,
            allocations: 500,
        };
        let long = Profile {
            instructions: 3_000_000,
            allocations: 900,
        };
        let figures = per_unit(short, long, 100);
        assert_eq!(figures["ir_per_message"], 20_000.0);
        assert_eq!(figures["allocs_per_message"], 4.0);
    }
}
