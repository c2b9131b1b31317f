//! `signalr-bench`: one load generator, speaking the SignalR protocol itself, driving our hub,
//! a raw WebSocket server (the ceiling any protocol layer can approach) and, when installed,
//! peer servers (aiosignalr, Socket.IO) side by side in one run, so that every figure can be
//! read as a ratio on a noisy machine.
//!
//! ```text
//! signalr-bench run [--smoke] [--json] [--only TEXT] [--no-peers] [--reps N]
//! signalr-bench table REPORT.json         # the table of a saved JSON report (any command's)
//! signalr-bench serve ours|raw|socketioxide   # one server; prints "LISTENING <port>"
//! signalr-bench attack [--smoke] [--json] [--attackers N] [--duration D] [--record-bytes N]
//!                      [--probe-rate N] [--endless]   # hostile framing: CPU and fairness
//! signalr-bench soak [--duration D] [--csv PATH] [--json] [--workers N] [--steady N]
//!                    [--only MIX]                    # churn, then: does memory come back?
//! signalr-bench ir [--json] [--only SCENARIO] [--scale N]  # instructions and allocations per
//!                                                # message under callgrind (valgrind needed)
//! signalr-bench work SCENARIO TARGET PORT K       # the fixed work `ir` measures, against a
//!                                                # running server
//! signalr-bench scale [--smoke] [--json] [--connections N] [--broadcasts N]
//!                     # 100,000 connections over several servers joined by Redis, broadcasts
//! ```
//! Servers run as child processes pinned to core 0 when `taskset` exists; run the generator
//! on another core (`taskset -c 1 signalr-bench run`) for the cleanest figures.

mod attack;
mod client;
mod ir;
mod scale;
mod scenarios;
mod servers;
mod soak;

// The allocator is a choice of this binary (and so of the servers it starts), never of the
// library: `--features jemalloc` or `--features mimalloc` (mimalloc wins if both are on).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::time::Duration;

use serde_json::{json, Value};
use signalr_core::protocol::Protocol;

use scenarios::{Kind, Timing};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => servers::serve(args.get(1).map(String::as_str).unwrap_or("ours")).await,
        Some("table") => {
            // Renders a saved `run --json` report.
            let path = args.get(1).map(String::as_str).unwrap_or("-");
            let text = if path == "-" {
                std::io::read_to_string(std::io::stdin()).unwrap_or_default()
            } else {
                std::fs::read_to_string(path).unwrap_or_default()
            };
            match serde_json::from_str::<Value>(&text) {
                // `attack`, `soak`, `ir` and `scale` reports have their own shapes.
                Ok(report) if report.get("receive").is_some() => attack::print(&report),
                Ok(report) if report.get("deliveries_expected").is_some() => scale::print(&report),
                Ok(report) if report.get("rss_kib").is_some() => soak::print(&report),
                Ok(report) if report["scenarios"][0].get("unit").is_some() => ir::print(&report),
                Ok(report) => print_table(&report),
                Err(e) => {
                    eprintln!("not a signalr-bench report: {e}");
                    std::process::exit(1);
                }
            }
        }
        Some("run") => {
            let flag = |name: &str| args.iter().any(|a| a == name);
            let only = args
                .iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
                .cloned();
            let reps = args
                .iter()
                .position(|a| a == "--reps")
                .and_then(|i| args.get(i + 1))
                .and_then(|n| n.parse().ok());
            let options = Options {
                reps,
                smoke: flag("--smoke"),
                peers: !flag("--no-peers"),
                only,
            };
            let report = run(&options).await;
            if flag("--json") {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_table(&report);
            }
        }
        Some("attack") => {
            let options = attack_options(&args).unwrap_or_else(|e| usage(&e));
            let report = attack::run(&options).await;
            finish("attack", report, flag(&args, "--json"), attack::print);
        }
        Some("soak") => {
            let options = soak_options(&args).unwrap_or_else(|e| usage(&e));
            let report = soak::run(&options).await;
            finish("soak", report, flag(&args, "--json"), soak::print);
        }
        Some("scale") => {
            let options = scale_options(&args).unwrap_or_else(|e| usage(&e));
            let report = scale::run(&options).await;
            finish("scale", report, flag(&args, "--json"), scale::print);
        }
        Some("scale-client") => {
            // One of `scale`'s generator processes; not meant to be run by hand.
            let ports: Option<Vec<u16>> = option(&args, "--ports", |v| {
                v.split(',').map(|p| p.parse().ok()).collect()
            })
            .unwrap_or_else(|e| usage(&e));
            let count = option(&args, "--count", |v| v.parse().ok()).unwrap_or_else(|e| usage(&e));
            let source =
                option(&args, "--source", |v| v.parse().ok()).unwrap_or_else(|e| usage(&e));
            let (Some(ports), Some(count), Some(source)) = (ports, count, source) else {
                usage("scale-client needs --ports, --count and --source");
            };
            scale::client_main(ports, count, source).await;
        }
        Some("ir") => {
            let options = ir::IrOptions {
                only: option(&args, "--only", |v| Some(v.to_owned())).unwrap_or_else(|e| usage(&e)),
                scale: option(&args, "--scale", |v| v.parse().ok().filter(|&n| n > 0))
                    .unwrap_or_else(|e| usage(&e))
                    .unwrap_or(1),
            };
            let report = ir::run(&options).await;
            finish("ir", report, flag(&args, "--json"), ir::print);
        }
        Some("work") => {
            // Fixed work against a server that is already running (for profiling by hand).
            let work = args.get(1).and_then(|w| ir::Work::parse(w));
            let target = args.get(2);
            let port = args.get(3).and_then(|p| p.parse().ok());
            let k = args.get(4).and_then(|k| k.parse().ok());
            let (Some(work), Some(target), Some(port), Some(k)) = (work, target, port, k) else {
                usage("work needs SCENARIO TARGET PORT K");
            };
            if let Err(e) = ir::fixed_work(work, target, port, k).await {
                eprintln!("work failed: {e}");
                std::process::exit(1);
            }
        }
        _ => usage(""),
    }
}

/// Prints a command's report (as JSON or as its table), or its failure and exits with 1.
fn finish(command: &str, report: Result<Value, String>, json: bool, print: fn(&Value)) {
    match report {
        Ok(report) if json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Ok(report) => print(&report),
        Err(e) => {
            eprintln!("{command} failed: {e}");
            std::process::exit(1);
        }
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("{problem}");
    }
    eprintln!(
        "usage: signalr-bench run [--smoke] [--json] [--only TEXT] [--no-peers] [--reps N]\n\
         \x20      signalr-bench table REPORT.json\n\
         \x20      signalr-bench serve ours|raw\n\
         \x20      signalr-bench attack [--smoke] [--json] [--attackers N] [--duration D] \
         [--record-bytes N] [--probe-rate N] [--endless]\n\
         \x20      signalr-bench soak [--duration D] [--csv PATH] [--json] [--workers N] [--steady N] \
         [--only MIX]\n\
         \x20      signalr-bench ir [--json] [--only SCENARIO] [--scale N]\n\
         \x20      signalr-bench scale [--smoke] [--json] [--connections N] [--broadcasts N]\n\
         \x20      signalr-bench work echo-json|echo-messagepack|broadcast ours|raw|socketioxide PORT K\n\
         durations: 90 (seconds), 500ms, 60s, 3m, 1h"
    );
    std::process::exit(2);
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

/// The value after `--name`, parsed; `Ok(None)` when the option is absent.
fn option<T>(
    args: &[String],
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => match args.get(i + 1).and_then(|v| parse(v)) {
            Some(value) => Ok(Some(value)),
            None => Err(format!("{name} needs a valid value")),
        },
    }
}

/// `90` (seconds), `500ms`, `60s`, `3m`, `1h`.
fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1e3,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
}

fn attack_options(args: &[String]) -> Result<attack::AttackOptions, String> {
    let mut options = attack::AttackOptions::new(flag(args, "--smoke"));
    if let Some(n) = option(args, "--attackers", |v| v.parse().ok())? {
        options.attackers = n;
    }
    if let Some(d) = option(args, "--duration", parse_duration)? {
        options.duration = d;
    }
    if let Some(n) = option(args, "--record-bytes", |v| v.parse().ok())? {
        options.record_bytes = n;
    }
    if let Some(n) = option(args, "--probe-rate", |v| v.parse().ok().filter(|&n| n > 0))? {
        options.probe_rate = n;
    }
    options.endless = flag(args, "--endless");
    Ok(options)
}

fn scale_options(args: &[String]) -> Result<scale::ScaleOptions, String> {
    let mut options = scale::ScaleOptions::new(flag(args, "--smoke"));
    if let Some(n) = option(args, "--connections", |v| v.parse().ok().filter(|&n| n > 0))? {
        options.connections = n;
    }
    if let Some(n) = option(args, "--broadcasts", |v| v.parse().ok().filter(|&n| n > 0))? {
        options.broadcasts = n;
    }
    Ok(options)
}

fn soak_options(args: &[String]) -> Result<soak::SoakOptions, String> {
    Ok(soak::SoakOptions {
        duration: option(args, "--duration", parse_duration)?
            .unwrap_or(Duration::from_secs(30 * 60)),
        csv: option(args, "--csv", |v| Some(std::path::PathBuf::from(v)))?,
        workers: option(args, "--workers", |v| v.parse().ok())?.unwrap_or(32),
        steady: option(args, "--steady", |v| v.parse().ok())?.unwrap_or(4),
        only: option(args, "--only", |v| Some(v.to_owned()))?,
    })
}

/// The allocator this binary (and so every server it starts) uses, with the glibc settings
/// that change its behaviour when they are set.
pub fn allocator() -> String {
    let (mut name, settings): (String, &[&str]) = if cfg!(feature = "mimalloc") {
        ("mimalloc".into(), &[])
    } else if cfg!(feature = "jemalloc") {
        // tikv-jemallocator's symbols are prefixed, and so is its settings variable.
        (
            "jemalloc (tikv-jemallocator)".into(),
            &["_RJEM_MALLOC_CONF"],
        )
    } else {
        (
            "system (glibc malloc)".into(),
            &["MALLOC_ARENA_MAX", servers::MALLOC_TRIM_SETTING],
        )
    };
    let mut set: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| {
            settings.contains(&key.as_str())
                || (cfg!(feature = "mimalloc") && key.starts_with("MIMALLOC_"))
        })
        .collect();
    set.sort();
    for (key, value) in set {
        name.push_str(&format!(", {key}={value}"));
    }
    name
}

struct Options {
    /// Repetitions instead of the mode's default (3, or 1 in smoke mode).
    reps: Option<usize>,
    smoke: bool,
    peers: bool,
    /// Runs only the scenarios whose name contains this text.
    only: Option<String>,
}

/// One scenario of the run: what it does, whom it runs against, and the metric that the smoke
/// test requires to be positive.
struct Scenario {
    name: String,
    kind: Kind,
    peers: &'static [&'static str],
    primary: &'static str,
}

/// socketioxide is served by this binary, so it is always there; the others need
/// `bench/peers/setup.sh`.
const WEBSOCKET_JSON_PEERS: &[&str] = &["aiosignalr", "socket.io", "socketioxide"];

/// The scenario list; sizes shrink in smoke mode.
fn scenarios(smoke: bool) -> Vec<Scenario> {
    let pick = |full: usize, small: usize| if smoke { small } else { full };
    let connections = pick(100, 10);
    let mut list = Vec::new();
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        list.push(Scenario {
            name: format!("echo, {connections} connections, closed loop, {protocol}, WebSockets"),
            kind: Kind::EchoClosed {
                protocol,
                connections,
                long_polling: false,
            },
            // Socket.IO has no MessagePack counterpart in its default parser.
            peers: if protocol == Protocol::Json {
                WEBSOCKET_JSON_PEERS
            } else {
                &["aiosignalr"]
            },
            primary: "messages_per_second",
        });
    }
    list.push(Scenario {
        name: format!(
            "echo, {connections} connections, closed loop, json, long polling (raw: WebSockets)"
        ),
        kind: Kind::EchoClosed {
            protocol: Protocol::Json,
            connections,
            long_polling: true,
        },
        peers: &["aiosignalr"],
        primary: "messages_per_second",
    });
    let rate = pick(10_000, 1_000) as u64;
    list.push(Scenario {
        name: format!("echo, {connections} connections, open loop at {rate} msg/s, json"),
        kind: Kind::EchoOpen {
            protocol: Protocol::Json,
            connections,
            rate,
        },
        peers: WEBSOCKET_JSON_PEERS,
        primary: "messages_per_second",
    });
    let broadcasts: &[(usize, u64)] = if smoke {
        &[(20, 100), (200, 10)]
    } else {
        &[(100, 1_000), (1_000, 100), (10_000, 10)]
    };
    for &(subscribers, rate) in broadcasts {
        list.push(Scenario {
            name: format!(
                "broadcast, {subscribers} subscribers, 1 publisher at {rate} msg/s ({} deliveries/s offered)",
                subscribers as u64 * rate
            ),
            kind: Kind::Broadcast { subscribers, rate },
            peers: WEBSOCKET_JSON_PEERS,
            primary: "deliveries_per_second",
        });
    }
    let (groups, rate) = if smoke { (5, 100) } else { (100, 10_000) };
    // Both fan-out scenarios offer 100,000 deliveries/s in the full run: about what the
    // generator's single core can read while still timing each delivery.
    list.push(Scenario {
        name: format!(
            "small groups, {groups} groups of 10, one sender each, {rate} msg/s in total ({} deliveries/s offered)",
            rate * 10
        ),
        kind: Kind::Groups {
            groups,
            size: 10,
            rate: rate as u64,
        },
        peers: WEBSOCKET_JSON_PEERS,
        primary: "deliveries_per_second",
    });
    let levels = if smoke {
        vec![50, 100]
    } else {
        vec![1_000, 5_000, 10_000, 19_000]
    };
    let levels = within_file_limit(levels);
    list.push(Scenario {
        name: format!(
            "idle WebSocket connections, ramp to {}",
            levels.last().copied().unwrap_or(0)
        ),
        kind: Kind::Idle { levels },
        peers: &[],
        primary: "",
    });
    let concurrency = pick(64, 8);
    list.push(Scenario {
        name: format!(
            "connection storm, {concurrency} concurrent clients (negotiate + WebSocket + handshake; raw: WebSocket)"
        ),
        kind: Kind::Storm { concurrency },
        peers: &[],
        primary: "connections_per_second",
    });
    list
}

/// Drops idle levels this process cannot hold: each connection costs the generator one file
/// descriptor too, so the ramp stops a little under the open-files limit.
fn within_file_limit(levels: Vec<usize>) -> Vec<usize> {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        .unwrap_or(usize::MAX);
    let kept: Vec<usize> = levels
        .iter()
        .copied()
        .filter(|&n| n + 500 <= limit)
        .collect();
    if kept.len() < levels.len() {
        eprintln!(
            "note: open-files limit {limit}; idle ramp stops at {kept:?} (raise it with ulimit -n)"
        );
    }
    kept
}

fn stats(values: &mut [f64]) -> Value {
    values.sort_by(|a, b| a.total_cmp(b));
    json!({"median": values[values.len() / 2], "min": values[0], "max": values[values.len() - 1]})
}

async fn run(options: &Options) -> Value {
    let (reps, timing) = if options.smoke {
        (
            1,
            Timing {
                warmup: Duration::from_millis(200),
                window: Duration::from_millis(800),
                grace: Duration::from_millis(300),
            },
        )
    } else {
        (
            3,
            Timing {
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(5),
                grace: Duration::from_secs(2),
            },
        )
    };
    let reps = options.reps.unwrap_or(reps).max(1);
    let mut report = Vec::new();
    for scenario in scenarios(options.smoke) {
        if options
            .only
            .as_ref()
            .is_some_and(|only| !scenario.name.contains(only.as_str()))
        {
            continue;
        }
        eprintln!("{}", scenario.name);
        let mut results = serde_json::Map::new();
        let mut skipped = serde_json::Map::new();
        let mut targets = vec!["ours", "raw"];
        let mut order: Vec<String> = Vec::new();
        for &peer in scenario.peers {
            match (options.peers, servers::peer_missing(peer)) {
                (false, _) => {
                    skipped.insert(peer.into(), "--no-peers".into());
                }
                (true, Some(reason)) => {
                    eprintln!("  {peer}: skipped, {reason}");
                    skipped.insert(peer.into(), reason.into());
                }
                (true, None) => targets.push(peer),
            }
        }
        // Repetitions go round the targets (ours, raw, peers, then again), so a burst of noise
        // from elsewhere on the machine lands on all of them rather than on one.
        let mut samples: Vec<Vec<(String, Vec<f64>)>> = vec![Vec::new(); targets.len()];
        let mut failures: Vec<Option<String>> = vec![None; targets.len()];
        for _ in 0..reps {
            for (index, &target) in targets.iter().enumerate() {
                if failures[index].is_some() {
                    continue;
                }
                let outcome = match servers::start(target).await {
                    Ok(server) => {
                        scenarios::run_once(&scenario.kind, &server, target, timing).await
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(metrics) => {
                        let line: Vec<String> = metrics
                            .iter()
                            .map(|(name, value)| format!("{name} {value:.1}"))
                            .collect();
                        eprintln!("  {target}: {}", line.join(", "));
                        for (name, value) in metrics {
                            let known = &mut samples[index];
                            match known.iter_mut().find(|(seen, _)| *seen == name) {
                                Some((_, values)) => values.push(value),
                                None => known.push((name, vec![value])),
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("  {target}: failed: {e}");
                        failures[index] = Some(e);
                    }
                }
                // Let the closed sockets of one repetition drain before the next.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for ((target, failure), samples) in targets.iter().zip(failures).zip(samples) {
            match failure {
                Some(e) => {
                    skipped.insert((*target).into(), format!("failed: {e}").into());
                }
                None => {
                    if order.is_empty() {
                        order = samples.iter().map(|(name, _)| name.clone()).collect();
                    }
                    let metrics: serde_json::Map<String, Value> = samples
                        .into_iter()
                        .map(|(name, mut values)| (name, stats(&mut values)))
                        .collect();
                    results.insert((*target).into(), metrics.into());
                }
            }
        }
        report.push(json!({
            "scenario": scenario.name,
            "primary": scenario.primary,
            "metrics": order,
            "results": results,
            "skipped": skipped,
        }));
    }
    json!({
        "machine": machine(),
        "repetitions": reps,
        "warmup_seconds": timing.warmup.as_secs_f64(),
        "window_seconds": timing.window.as_secs_f64(),
        "scenarios": report,
    })
}

/// The processor model and core count, for the report.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cores} cores available to the generator")
}

fn figure(value: &Value) -> String {
    let number = |v: &Value| {
        let v = v.as_f64().unwrap_or(0.0);
        if v.abs() >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    format!(
        "{} [{}–{}]",
        number(&value["median"]),
        number(&value["min"]),
        number(&value["max"])
    )
}

fn ratio(ours: &Value, other: &Value) -> String {
    match (ours["median"].as_f64(), other["median"].as_f64()) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn print_table(report: &Value) {
    println!("machine: {}", report["machine"].as_str().unwrap_or(""));
    println!(
        "| scenario | metric | ours | raw | ours/raw | aiosignalr | ours/aiosignalr | socket.io | ours/socket.io | socketioxide | ours/socketioxide |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for scenario in report["scenarios"].as_array().into_iter().flatten() {
        let results = &scenario["results"];
        let name = scenario["scenario"].as_str().unwrap_or("");
        for metric in scenario["metrics"].as_array().into_iter().flatten() {
            let metric = metric.as_str().unwrap_or("");
            let ours = &results["ours"][metric];
            if ours.is_null() {
                continue;
            }
            let mut row = format!("| {name} | {metric} | {} |", figure(ours));
            for other in ["raw", "aiosignalr", "socket.io", "socketioxide"] {
                let value = &results[other][metric];
                if value.is_null() {
                    // Not run: the peer does not apply to the scenario, was skipped, or failed.
                    let why = scenario["skipped"][other].as_str().map_or("n/a", |why| {
                        if why.starts_with("failed") {
                            "failed"
                        } else {
                            "skipped"
                        }
                    });
                    row.push_str(&format!(" {why} | – |"));
                } else {
                    row.push_str(&format!(" {} | {} |", figure(value), ratio(ours, value)));
                }
            }
            println!("{row}");
        }
        if results["ours"].is_null() {
            println!("| {name} | ours failed | – | – | – | – | – | – | – | – | – |");
        }
    }
    for scenario in report["scenarios"].as_array().into_iter().flatten() {
        for (target, why) in scenario["skipped"].as_object().into_iter().flatten() {
            println!(
                "{target} in \"{}\": {}",
                scenario["scenario"].as_str().unwrap_or(""),
                why.as_str().unwrap_or("")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3m"), Some(Duration::from_secs(180)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("10 s"), None);
        assert_eq!(parse_duration("fast"), None);
    }

    #[test]
    fn a_missing_value_is_an_error_not_a_default() {
        let args: Vec<String> = ["soak", "--duration"].map(String::from).to_vec();
        assert!(soak_options(&args).is_err());
        let args: Vec<String> = ["soak", "--duration", "2m", "--workers", "8"]
            .map(String::from)
            .to_vec();
        let options = soak_options(&args).expect("valid");
        assert_eq!(options.duration, Duration::from_secs(120));
        assert_eq!(options.workers, 8);
    }
}
