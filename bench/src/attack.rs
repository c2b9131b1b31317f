//! `signalr-bench attack`: what hostile framing costs our server, and what it costs everyone
//! else on it (issue 16).
//!
//! 1. **Receive cost**: server CPU time to take in one large `Echo` record (32,000 bytes by
//!    default, under the 32 KiB receive limit) sent as one WebSocket message per byte, against
//!    the same record in one message, per protocol. A JSON record is found by scanning for 0x1E;
//!    a scan that starts over from the beginning of the buffer after every chunk makes this cost
//!    grow with the square of the record's length. MessagePack records are length-prefixed, so
//!    they show what the per-message overhead alone costs.
//! 2. **Fairness**: a well-behaved probe client's echo latency, alone and then while N attacker
//!    connections stream such records (or one record that never ends) continuously.
//!
//! Every server is a fresh child process (`signalr-bench serve ours`, pinned to core 0 like the
//! other scenarios), so its CPU time, read from `/proc/PID/stat`, holds no generator work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signalr_core::protocol::Protocol;
use tokio_tungstenite::tungstenite::{Bytes, Message as Ws, Utf8Bytes};

use crate::client::{self, frame_bytes, micros, payload, Socket, Wire};
use crate::scenarios::{quantile, spawn_counter};
use crate::servers::{self, cpu_seconds};

/// What one `attack` run does.
#[derive(Clone, Debug)]
pub struct AttackOptions {
    /// Size of the attack record, framing included.
    pub record_bytes: usize,
    /// Attacker connections in the fairness phases.
    pub attackers: usize,
    /// Measured window of each fairness phase.
    pub duration: Duration,
    /// The probe's echoes per second.
    pub probe_rate: u64,
    /// Attackers send one record that never ends instead of whole records.
    pub endless: bool,
    /// Wall-clock budget of each receive-cost measurement.
    pub receive_budget: Duration,
    /// Time for attackers to get going before the probe's window opens.
    pub warmup: Duration,
    /// How long answers to probes sent in the window may still arrive after it.
    pub grace: Duration,
}

impl AttackOptions {
    /// The full run (about a minute), or tiny sizes and short windows for the smoke test.
    pub fn new(smoke: bool) -> AttackOptions {
        if smoke {
            AttackOptions {
                record_bytes: 2_000,
                attackers: 2,
                duration: Duration::from_millis(500),
                probe_rate: 100,
                endless: false,
                receive_budget: Duration::from_millis(200),
                warmup: Duration::from_millis(100),
                grace: Duration::from_millis(300),
            }
        } else {
            AttackOptions {
                record_bytes: 32_000,
                attackers: 4,
                duration: Duration::from_secs(10),
                probe_rate: 100,
                endless: false,
                receive_budget: Duration::from_secs(4),
                warmup: Duration::from_secs(1),
                grace: Duration::from_secs(3),
            }
        }
    }
}

/// Server CPU at which a receive-cost measurement stops early: 50 of /proc's 10 ms ticks, so
/// the rounding of the tick count stays within 2 %.
const ENOUGH_CPU_SECONDS: f64 = 0.5;

/// One-byte messages written before each flush. An attacker batches its tiny frames into
/// full TCP segments (about 3.5 KB here, under the server's 4 KiB read buffer) so that the
/// server's per-message work, not a system call per byte on either side, is what is measured.
const FRAMES_PER_FLUSH: usize = 512;

const BYTE_VALUES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = i as u8;
        i += 1;
    }
    table
};

/// Every byte value, so that a one-byte message borrows its byte instead of allocating it.
static BYTE_TABLE: [u8; 256] = BYTE_VALUES;

/// The ASCII characters, for one-byte text messages (a text message must be valid UTF-8 on its
/// own, so only ASCII bytes can travel alone).
const ASCII: &str = match std::str::from_utf8(BYTE_VALUES.split_at(128).0) {
    Ok(ascii) => ascii,
    Err(_) => panic!("ASCII is UTF-8"),
};

/// A WebSocket message holding the single byte `byte`: text for JSON, binary for MessagePack.
fn one_byte_message(byte: u8, text: bool) -> Result<Ws, String> {
    let at = usize::from(byte);
    if !text {
        return Ok(Ws::Binary(Bytes::from_static(&BYTE_TABLE[at..=at])));
    }
    if byte >= 128 {
        return Err(format!(
            "byte {byte:#x} cannot be a text message on its own"
        ));
    }
    Ok(Ws::Text(Utf8Bytes::from_static(&ASCII[at..=at])))
}

/// Whether the protocol's records travel in text messages.
fn is_text(protocol: Protocol) -> bool {
    protocol == Protocol::Json
}

/// The whole-message form of a record.
fn whole_message(record: &[u8], protocol: Protocol) -> Result<Ws, String> {
    if is_text(protocol) {
        let text = String::from_utf8(record.to_vec()).map_err(|e| e.to_string())?;
        Ok(Ws::text(text))
    } else {
        Ok(Ws::binary(record.to_vec()))
    }
}

/// An `Echo` invocation (id `1`) whose argument is a string of `x`, sized so that the framed
/// record is `len` bytes (or the nearest below when a length prefix or string header grows).
pub fn echo_record(protocol: Protocol, len: usize) -> Vec<u8> {
    let build = |pad: usize| -> Vec<u8> {
        let argument = "x".repeat(pad);
        let frame = Wire::SignalR(protocol).call("Echo", &[&argument], Some(1));
        frame_bytes(&frame).unwrap_or_default().to_vec()
    };
    let mut pad = len.saturating_sub(build(0).len());
    for _ in 0..4 {
        let built = build(pad).len();
        if built == len {
            break;
        }
        pad = (pad + len).saturating_sub(built);
    }
    let record = build(pad);
    if record.len() > len && pad > 0 {
        return build(pad - (record.len() - len).min(pad));
    }
    record
}

/// The start of a record that never ends: an `Echo` invocation up to the opening quote of
/// its argument (JSON), or a length prefix announcing 1 GiB followed by the start of one
/// (MessagePack). The attacker then sends `x` for ever.
fn endless_prefix(protocol: Protocol) -> Vec<u8> {
    let frame = Wire::SignalR(protocol).call("Echo", &["x"], Some(1));
    let record = frame_bytes(&frame).unwrap_or_default().to_vec();
    // No byte before the argument is an `x` (0x78) in either encoding.
    let cut = record
        .iter()
        .position(|&b| b == b'x')
        .unwrap_or(record.len());
    match protocol {
        Protocol::Json => record[..cut].to_vec(),
        _ => {
            // The body without its own one-byte prefix.
            let mut prefix = vec![0x80, 0x80, 0x80, 0x80, 0x04];
            prefix.extend_from_slice(&record[1..cut]);
            prefix
        }
    }
}

/// Sends `bytes` as one WebSocket message per byte.
async fn send_bytewise(
    sink: &mut SplitSink<Socket, Ws>,
    bytes: &[u8],
    text: bool,
) -> Result<(), String> {
    for (i, &byte) in bytes.iter().enumerate() {
        sink.feed(one_byte_message(byte, text)?)
            .await
            .map_err(|e| e.to_string())?;
        if (i + 1) % FRAMES_PER_FLUSH == 0 {
            sink.flush().await.map_err(|e| e.to_string())?;
        }
    }
    sink.flush().await.map_err(|e| e.to_string())
}

/// Server CPU per record received (and echoed) in one framing.
struct ReceiveCost {
    records: u64,
    server_cpu_seconds: f64,
    wall_seconds: f64,
}

impl ReceiveCost {
    fn cpu_ms_per_record(&self) -> f64 {
        self.server_cpu_seconds * 1e3 / self.records.max(1) as f64
    }

    fn to_json(&self) -> Value {
        json!({
            "records": self.records,
            "server_cpu_seconds": self.server_cpu_seconds,
            "wall_seconds": self.wall_seconds,
            "server_cpu_ms_per_record": self.cpu_ms_per_record(),
        })
    }
}

/// Sends the record again and again, each time waiting for its echo, until the server has
/// spent enough CPU for a precise figure or the budget is spent. `target` is `ours` (the hub)
/// or `raw` (the baseline's `/records`, which only finds records and sends them back).
async fn receive_cost(
    server: &servers::Server,
    target: &str,
    protocol: Protocol,
    record: &[u8],
    bytewise: bool,
    budget: Duration,
) -> Result<ReceiveCost, String> {
    let wire = Wire::SignalR(protocol);
    let socket = if target == "raw" {
        let url = format!("ws://127.0.0.1:{}/records", server.port);
        client::open(&url, target, protocol).await?
    } else {
        client::connect(server.port, target, protocol, None).await?
    };
    let (mut sink, mut stream) = socket.split();
    let whole = whole_message(record, protocol)?;
    // One record first, outside the measurement: the connection's buffers reach their size.
    sink.send(whole.clone()).await.map_err(|e| e.to_string())?;
    next_echo(&mut stream, wire).await?;
    let cpu_before = cpu_seconds(server.pid());
    let began = Instant::now();
    let mut records = 0u64;
    loop {
        if bytewise {
            send_bytewise(&mut sink, record, is_text(protocol)).await?;
        } else {
            sink.send(whole.clone()).await.map_err(|e| e.to_string())?;
        }
        next_echo(&mut stream, wire).await?;
        records += 1;
        let spent = cpu_seconds(server.pid()) - cpu_before;
        if spent >= ENOUGH_CPU_SECONDS || began.elapsed() >= budget {
            return Ok(ReceiveCost {
                records,
                server_cpu_seconds: spent.max(0.0),
                wall_seconds: began.elapsed().as_secs_f64(),
            });
        }
    }
}

/// Waits for the next data frame that is not a keep-alive: the echo of the record.
async fn next_echo(
    stream: &mut futures_util::stream::SplitStream<Socket>,
    wire: Wire,
) -> Result<(), String> {
    let wait = async {
        loop {
            match stream.next().await {
                Some(Ok(frame)) if wire.is_ping(&frame) => continue,
                Some(Ok(frame)) if frame.is_close() => {
                    return Err(format!("the server closed the connection: {frame}"))
                }
                Some(Ok(_)) => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the server closed the connection".into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .map_err(|_| "no echo within 60 s".to_string())?
}

/// What the probe saw in one phase.
struct ProbeOutcome {
    sent: u64,
    latencies_us: Vec<u64>,
}

/// The well-behaved client: `Echo` at a fixed rate on its own thread and runtime (so that the
/// attackers' tasks in the generator cannot delay its reads), each payload carrying its send
/// time. Sends never wait for answers, so a slow server shows as latency, not as fewer sends.
fn spawn_probe(
    port: u16,
    rate: u64,
    start: Instant,
    end: Instant,
    grace: Duration,
) -> std::thread::JoinHandle<Result<ProbeOutcome, String>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let socket = client::connect(port, "ours", Protocol::Json, None).await?;
            let (mut sink, stream) = socket.split();
            let counter = spawn_counter(stream, micros(start), micros(end), end + grace);
            let wire = Wire::SignalR(Protocol::Json);
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut sent = 0u64;
            for k in 0u32.. {
                let at = start + interval * k;
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let frame = wire.call("Echo", &[&payload(Instant::now())], Some(u64::from(k)));
                sink.send(frame)
                    .await
                    .map_err(|e| format!("probe: send failed: {e}"))?;
                sent += 1;
            }
            let latencies_us = counter.await.map_err(|e| e.to_string())?;
            Ok(ProbeOutcome { sent, latencies_us })
        })
    })
}

/// Counts shared by the attackers of one phase.
#[derive(Default)]
struct AttackCounts {
    connections: AtomicU64,
    records_sent: AtomicU64,
    echoes: AtomicU64,
    bytes_sent: AtomicU64,
}

/// One attacker: connects, streams one-byte messages until `end`, and reconnects whenever the
/// server closes it. A reader drains the echoes so that the server never waits on this client's
/// socket.
async fn attacker(
    port: u16,
    protocol: Protocol,
    record: Arc<Vec<u8>>,
    endless: bool,
    end: Instant,
    counts: Arc<AttackCounts>,
) {
    let wire = Wire::SignalR(protocol);
    let text = is_text(protocol);
    while Instant::now() < end {
        let connected =
            tokio::time::timeout_at(end.into(), client::connect(port, "ours", protocol, None))
                .await;
        let socket = match connected {
            Ok(Ok(socket)) => socket,
            Ok(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(_) => return,
        };
        counts.connections.fetch_add(1, Ordering::Relaxed);
        let (mut sink, mut stream) = socket.split();
        let drain = tokio::spawn({
            let counts = counts.clone();
            async move {
                while let Some(Ok(frame)) = stream.next().await {
                    if !wire.is_ping(&frame) && frame_bytes(&frame).is_some() {
                        counts.echoes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        let stream_bytes = async {
            if endless {
                let prefix = endless_prefix(protocol);
                send_bytewise(&mut sink, &prefix, text).await?;
                counts
                    .bytes_sent
                    .fetch_add(prefix.len() as u64, Ordering::Relaxed);
                let filler = [b'x'; FRAMES_PER_FLUSH];
                loop {
                    send_bytewise(&mut sink, &filler, text).await?;
                    counts
                        .bytes_sent
                        .fetch_add(filler.len() as u64, Ordering::Relaxed);
                }
            } else {
                loop {
                    send_bytewise(&mut sink, &record, text).await?;
                    counts.records_sent.fetch_add(1, Ordering::Relaxed);
                    counts
                        .bytes_sent
                        .fetch_add(record.len() as u64, Ordering::Relaxed);
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        };
        // Ends at `end`, or when the server closes the connection (then: reconnect).
        let _ = tokio::time::timeout_at(end.into(), stream_bytes).await;
        drain.abort();
    }
}

/// One fairness phase on a fresh server: the probe alone, or with attackers.
async fn fairness_phase(
    options: &AttackOptions,
    attackers: usize,
    protocol: Protocol,
) -> Result<Value, String> {
    let server = servers::start("ours").await?;
    let record = Arc::new(echo_record(protocol, options.record_bytes));
    let counts = Arc::new(AttackCounts::default());
    let t0 = Instant::now();
    let start = t0 + options.warmup;
    let end = start + options.duration;
    let tasks: Vec<_> = (0..attackers)
        .map(|_| {
            tokio::spawn(attacker(
                server.port,
                protocol,
                record.clone(),
                options.endless,
                end,
                counts.clone(),
            ))
        })
        .collect();
    let probe = spawn_probe(server.port, options.probe_rate, start, end, options.grace);
    tokio::time::sleep_until(start.into()).await;
    let pid = server.pid();
    let (server_before, generator_before) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let (records_before, bytes_before) = (
        counts.records_sent.load(Ordering::Relaxed),
        counts.bytes_sent.load(Ordering::Relaxed),
    );
    tokio::time::sleep_until(end.into()).await;
    let window = options.duration.as_secs_f64();
    let server_cores = (cpu_seconds(pid) - server_before).max(0.0) / window;
    let generator_cores = (cpu_seconds(std::process::id()) - generator_before).max(0.0) / window;
    let records = counts.records_sent.load(Ordering::Relaxed) - records_before;
    let bytes = counts.bytes_sent.load(Ordering::Relaxed) - bytes_before;
    for task in tasks {
        let _ = task.await;
    }
    let outcome = tokio::task::spawn_blocking(move || probe.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the probe thread panicked".to_string())??;
    let mut latencies = outcome.latencies_us;
    latencies.sort_unstable();
    if latencies.is_empty() {
        return Err(format!(
            "no probe echo came back ({} sent) with {attackers} attackers",
            outcome.sent
        ));
    }
    let ms = |us: f64| us / 1e3;
    Ok(json!({
        "attackers": attackers,
        "attack_protocol": if attackers == 0 { Value::Null } else { protocol.name().into() },
        "probe_sent": outcome.sent,
        "probe_answered": latencies.len(),
        "probe_unanswered": outcome.sent.saturating_sub(latencies.len() as u64),
        "p50_ms": ms(quantile(&latencies, 0.50)),
        "p99_ms": ms(quantile(&latencies, 0.99)),
        "max_ms": ms(latencies.last().copied().unwrap_or(0) as f64),
        "server_cpu_cores": server_cores,
        "generator_cpu_cores": generator_cores,
        "attacker_connections": counts.connections.load(Ordering::Relaxed),
        "attacker_records_per_second": records as f64 / window,
        "attacker_bytes_per_second": bytes as f64 / window,
        "attacker_echoes": counts.echoes.load(Ordering::Relaxed),
    }))
}

/// The whole run: receive cost per protocol and framing, then the fairness phases.
pub async fn run(options: &AttackOptions) -> Result<Value, String> {
    // The last row is the floor: a tokio-tungstenite server that only appends each frame to a
    // buffer, finds the separator and sends the record back. What one-byte messages cost it is
    // what they cost any server on this WebSocket stack, before a record is parsed at all.
    let mut receive = Vec::new();
    for (target, protocol) in [
        ("ours", Protocol::Json),
        ("ours", Protocol::MessagePack),
        ("raw", Protocol::Json),
    ] {
        let record = echo_record(protocol, options.record_bytes);
        let server = servers::start(target).await?;
        let name = if target == "raw" {
            "raw records (the floor)".to_string()
        } else {
            protocol.name().to_string()
        };
        eprintln!("receive cost, {name}, {} bytes", record.len());
        let budget = options.receive_budget;
        let whole = receive_cost(&server, target, protocol, &record, false, budget).await?;
        let bytewise = receive_cost(&server, target, protocol, &record, true, budget).await?;
        eprintln!(
            "  one message {:.3} ms/record, one-byte messages {:.3} ms/record",
            whole.cpu_ms_per_record(),
            bytewise.cpu_ms_per_record()
        );
        // Below one /proc tick the one-message figure is a bound, not a measurement.
        let ratio = if whole.server_cpu_seconds > 0.0 {
            json!(bytewise.cpu_ms_per_record() / whole.cpu_ms_per_record())
        } else {
            Value::Null
        };
        receive.push(json!({
            "protocol": name,
            "target": target,
            "record_bytes": record.len(),
            "one_message": whole.to_json(),
            "one_byte_messages": bytewise.to_json(),
            "ratio": ratio,
        }));
    }
    let mut phases = Vec::new();
    let mut plan = vec![(0, Protocol::Json)];
    if options.attackers > 0 {
        plan.push((options.attackers, Protocol::Json));
        plan.push((options.attackers, Protocol::MessagePack));
    }
    for (attackers, protocol) in plan {
        let name = if attackers == 0 {
            "baseline, no attackers".to_string()
        } else {
            format!("{attackers} {protocol} attackers")
        };
        eprintln!("fairness: {name}");
        let mut phase = fairness_phase(options, attackers, protocol).await?;
        phase["phase"] = name.into();
        eprintln!(
            "  probe p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            phase["p50_ms"].as_f64().unwrap_or(0.0),
            phase["p99_ms"].as_f64().unwrap_or(0.0),
            phase["max_ms"].as_f64().unwrap_or(0.0)
        );
        phases.push(phase);
        // Let the sockets of one phase drain before the next server starts.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(json!({
        "machine": crate::machine(),
        "allocator": crate::allocator(),
        "record_bytes": options.record_bytes,
        "receive": receive,
        "fairness": {
            "attackers": options.attackers,
            "endless_records": options.endless,
            "window_seconds": options.duration.as_secs_f64(),
            "probe_rate": options.probe_rate,
            "phases": phases,
        },
    }))
}

/// The human-readable form of a report.
pub fn print(report: &Value) {
    println!("machine: {}", report["machine"].as_str().unwrap_or(""));
    println!("allocator: {}", report["allocator"].as_str().unwrap_or(""));
    println!();
    println!(
        "Server CPU to receive one record and echo it, per record (record of {} bytes):",
        report["record_bytes"]
    );
    println!("| protocol | one message | one-byte messages | ratio | records measured (one / one-byte) |");
    println!("|---|---|---|---|---|");
    for row in report["receive"].as_array().into_iter().flatten() {
        let cost = |framing: &str| {
            row[framing]["server_cpu_ms_per_record"]
                .as_f64()
                .unwrap_or(0.0)
        };
        let ratio = row["ratio"]
            .as_f64()
            .map_or("– (under one tick)".to_string(), |r| format!("{r:.0}×"));
        println!(
            "| {} | {:.3} ms | {:.3} ms | {} | {} / {} |",
            row["protocol"].as_str().unwrap_or(""),
            cost("one_message"),
            cost("one_byte_messages"),
            ratio,
            row["one_message"]["records"],
            row["one_byte_messages"]["records"],
        );
    }
    let fairness = &report["fairness"];
    println!();
    println!(
        "Probe echo latency (one JSON WebSocket client, {} echoes/s, {} s window){}:",
        fairness["probe_rate"],
        fairness["window_seconds"],
        if fairness["endless_records"].as_bool() == Some(true) {
            ", attackers send records that never end"
        } else {
            ", attackers send whole records as one-byte messages"
        }
    );
    println!("| phase | p50 | p99 | max | answered / sent | server CPU (cores) | generator CPU (cores) | attacker records/s | attacker KB/s | attacker connections |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for phase in fairness["phases"].as_array().into_iter().flatten() {
        let f = |key: &str| phase[key].as_f64().unwrap_or(0.0);
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {} / {} | {:.2} | {:.2} | {:.1} | {:.0} | {} |",
            phase["phase"].as_str().unwrap_or(""),
            f("p50_ms"),
            f("p99_ms"),
            f("max_ms"),
            phase["probe_answered"],
            phase["probe_sent"],
            f("server_cpu_cores"),
            f("generator_cpu_cores"),
            f("attacker_records_per_second"),
            f("attacker_bytes_per_second") / 1e3,
            phase["attacker_connections"],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_the_asked_size_and_end_as_their_protocol_says() {
        let json = echo_record(Protocol::Json, 32_000);
        assert_eq!(json.len(), 32_000);
        assert_eq!(json.last(), Some(&0x1e));
        assert_eq!(json.iter().filter(|&&b| b == 0x1e).count(), 1);
        assert!(json.is_ascii());
        let msgpack = echo_record(Protocol::MessagePack, 32_000);
        assert!(
            (31_990..=32_000).contains(&msgpack.len()),
            "{}",
            msgpack.len()
        );
        // The varint length prefix covers exactly the rest of the record.
        let (mut length, mut shift, mut at) = (0usize, 0, 0);
        loop {
            let byte = msgpack[at];
            length |= usize::from(byte & 0x7f) << shift;
            at += 1;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        assert_eq!(at + length, msgpack.len());
    }

    #[test]
    fn endless_prefixes_never_finish_a_record() {
        let json = endless_prefix(Protocol::Json);
        assert!(json.ends_with(b"[\""), "{}", String::from_utf8_lossy(&json));
        assert!(!json.contains(&0x1e));
        let msgpack = endless_prefix(Protocol::MessagePack);
        assert_eq!(&msgpack[..5], &[0x80, 0x80, 0x80, 0x80, 0x04]);
    }

    #[test]
    fn one_byte_messages_carry_their_byte() {
        for byte in [0u8, b'{', 0x1e, 127] {
            let frame = one_byte_message(byte, true).expect("ASCII");
            assert_eq!(frame_bytes(&frame), Some(&[byte][..]));
            assert!(frame.is_text());
        }
        let frame = one_byte_message(0xc4, false).expect("binary");
        assert_eq!(frame_bytes(&frame), Some(&[0xc4][..]));
        assert!(one_byte_message(0xc4, true).is_err());
    }
}
