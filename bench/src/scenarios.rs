//! One repetition of each scenario against one running server. Each returns its metrics by
//! name; the caller repeats, aggregates and prints.

use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use signalr_core::protocol::Protocol;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::client::{self, frame_bytes, markers, micros, payload, HttpConnection, Socket, Wire};
use crate::servers::{cpu_seconds, rss_kib, Server};

pub type Metrics = Vec<(String, f64)>;

/// Warm-up and measured window of one repetition.
#[derive(Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub window: Duration,
    /// How long deliveries of messages sent in the window may still arrive after it.
    pub grace: Duration,
}

/// What a scenario does; its sizes come from the run's mode (smoke or full).
#[derive(Clone, Debug)]
pub enum Kind {
    /// Each connection sends `Echo`, waits for the answer, sends again.
    EchoClosed {
        protocol: Protocol,
        connections: usize,
        long_polling: bool,
    },
    /// `Echo` at a fixed total rate spread over the connections, whatever the answers do.
    EchoOpen {
        protocol: Protocol,
        connections: usize,
        rate: u64,
    },
    /// One publisher calls `Broadcast` at a fixed rate; every subscriber receives each message.
    Broadcast { subscribers: usize, rate: u64 },
    /// Groups of `size`; one member of each sends to its group, `rate` messages/s in total.
    Groups {
        groups: usize,
        size: usize,
        rate: u64,
    },
    /// Idle connections opened in steps; the server's RSS growth per connection at each.
    Idle { levels: Vec<usize> },
    /// `concurrency` clients connecting (negotiate, WebSocket, handshake) and closing in a loop.
    Storm { concurrency: usize },
}

pub async fn run_once(
    kind: &Kind,
    server: &Server,
    target: &str,
    timing: Timing,
) -> Result<Metrics, String> {
    match kind {
        Kind::EchoClosed {
            protocol,
            connections,
            long_polling,
        } => {
            if *long_polling && target != "raw" {
                echo_long_polling(server, *connections, timing).await
            } else {
                echo_closed(server, target, *protocol, *connections, timing).await
            }
        }
        Kind::EchoOpen {
            protocol,
            connections,
            rate,
        } => echo_open(server, target, *protocol, *connections, *rate, timing).await,
        Kind::Broadcast { subscribers, rate } => {
            fan_out(server, target, 1, *subscribers, *rate, timing).await
        }
        Kind::Groups { groups, size, rate } => {
            fan_out(server, target, *groups, *size, *rate, timing).await
        }
        Kind::Idle { levels } => idle(server, target, levels).await,
        Kind::Storm { concurrency } => storm(server, target, *concurrency, timing).await,
    }
}

/// Quantiles of a latency sample, in microseconds.
pub fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)] as f64
}

fn latency_metrics(mut latencies: Vec<u64>, metrics: &mut Metrics) {
    latencies.sort_unstable();
    metrics.push(("p50_us".into(), quantile(&latencies, 0.50)));
    metrics.push(("p99_us".into(), quantile(&latencies, 0.99)));
    metrics.push(("p99.9_us".into(), quantile(&latencies, 0.999)));
}

/// Opens `n` connections, a hundred at a time; `room(i)` picks the raw baseline's room.
async fn connect_many(
    server: &Server,
    target: &str,
    protocol: Protocol,
    n: usize,
    room: impl Fn(usize) -> Option<String>,
) -> Result<Vec<Socket>, String> {
    let port = server.port;
    let attempts = futures_util::stream::iter(0..n)
        .map(|i| {
            let room = room(i);
            async move { client::connect(port, target, protocol, room.as_deref()).await }
        })
        .buffered(100)
        .collect::<Vec<_>>();
    let results = tokio::time::timeout(Duration::from_secs(120), attempts)
        .await
        .map_err(|_| format!("{target}: could not open {n} connections within 120 s"))?;
    results.into_iter().collect()
}

/// Waits until `at` with better than a millisecond's precision: tokio's timers round to the
/// millisecond, so the last stretch is spent yielding to the other tasks instead.
async fn pace(at: Instant) {
    loop {
        let now = Instant::now();
        if now >= at {
            return;
        }
        if at - now > Duration::from_millis(2) {
            tokio::time::sleep_until((at - Duration::from_millis(1)).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Reads a connection until `until`, returning the latency of every marked message sent
/// inside `[from, to)` (microsecond timestamps).
pub fn spawn_counter(
    mut stream: SplitStream<Socket>,
    from: u64,
    to: u64,
    until: Instant,
) -> JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until.into(), stream.next()).await {
            let Some(bytes) = frame_bytes(&frame) else {
                continue;
            };
            let now = micros(Instant::now());
            for sent in markers(bytes) {
                if (from..to).contains(&sent) {
                    latencies.push(now.saturating_sub(sent));
                }
            }
        }
        latencies
    })
}

/// Closed loop: each connection sends, waits for the answer, and sends again.
async fn echo_closed(
    server: &Server,
    target: &str,
    protocol: Protocol,
    connections: usize,
    timing: Timing,
) -> Result<Metrics, String> {
    let wire = Wire::of(target, protocol);
    let sockets = connect_many(server, target, protocol, connections, |_| None).await?;
    let start = Instant::now() + timing.warmup;
    let end = start + timing.window;
    let frame = wire.call("Echo", &[&payload(Instant::now())], Some(1));
    let mut tasks = Vec::new();
    for mut socket in sockets {
        let frame = frame.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= end
                    || socket.send(frame.clone()).await.is_err()
                    || !client::next_data(&mut socket, wire).await
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
    closed_loop_metrics(server.pid(), start, tasks, timing).await
}

/// Waits for the closed-loop tasks (each returning its latencies) and reads the server's CPU
/// time at the start of the window and after the last task ends.
async fn closed_loop_metrics(
    pid: u32,
    start: Instant,
    tasks: Vec<JoinHandle<Vec<u64>>>,
    timing: Timing,
) -> Result<Metrics, String> {
    tokio::time::sleep_until(start.into()).await;
    let cpu_before = cpu_seconds(pid);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let cpu = (cpu_seconds(pid) - cpu_before).max(0.0);
    let count = latencies.len() as f64;
    if count == 0.0 {
        return Err("no answer arrived in the measured window".into());
    }
    let mut metrics = vec![(
        "messages_per_second".to_string(),
        count / timing.window.as_secs_f64(),
    )];
    latency_metrics(latencies, &mut metrics);
    metrics.push(("server_cpu_seconds_per_million".into(), cpu / (count / 1e6)));
    Ok(metrics)
}

/// The closed loop over long polling (our hub and aiosignalr): each invocation is a POST and
/// its answer arrives on the pending poll.
async fn echo_long_polling(
    server: &Server,
    connections: usize,
    timing: Timing,
) -> Result<Metrics, String> {
    let http = client::http_client()?;
    let port = server.port;
    let opened = futures_util::stream::iter(0..connections)
        .map(|_| HttpConnection::long_polling(&http, port))
        .buffered(50)
        .collect::<Vec<_>>()
        .await;
    let polls: Vec<HttpConnection> = opened.into_iter().collect::<Result<_, _>>()?;
    let start = Instant::now() + timing.warmup;
    let end = start + timing.window;
    let Ws::Text(body) =
        Wire::SignalR(Protocol::Json).call("Echo", &[&payload(Instant::now())], Some(1))
    else {
        unreachable!("JSON calls are text frames")
    };
    let body = body.as_bytes().to_vec();
    let mut tasks = Vec::new();
    for mut poll in polls {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            'calls: loop {
                let sent = Instant::now();
                if sent >= end || poll.send(body.clone()).await.is_err() {
                    break;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), poll.received.recv()).await
                    {
                        Ok(Some(answer)) if markers(&answer).next().is_some() => break,
                        Ok(Some(_)) => continue,
                        _ => break 'calls,
                    }
                }
                if sent >= start {
                    latencies.push(sent.elapsed().as_micros() as u64);
                }
            }
            latencies
        }));
    }
    closed_loop_metrics(server.pid(), start, tasks, timing).await
}

/// Open loop: sends are scheduled on a clock (message `k` at `t0 + k / rate`) and each carries
/// its scheduled time, so a late send or a slow answer both show up as latency: a stalled
/// server cannot slow the generator down and hide its own delay.
async fn echo_open(
    server: &Server,
    target: &str,
    protocol: Protocol,
    connections: usize,
    rate: u64,
    timing: Timing,
) -> Result<Metrics, String> {
    let wire = Wire::of(target, protocol);
    let sockets = connect_many(server, target, protocol, connections, |_| None).await?;
    let (mut sinks, streams): (Vec<_>, Vec<_>) = sockets.into_iter().map(|s| s.split()).unzip();
    let t0 = Instant::now() + Duration::from_millis(50);
    let start = t0 + timing.warmup;
    let end = start + timing.window;
    let counters: Vec<_> = streams
        .into_iter()
        .map(|s| spawn_counter(s, micros(start), micros(end), end + timing.grace))
        .collect();
    schedule(&mut sinks, t0, end, rate, |k, at| {
        (k, wire.call("Echo", &[&payload(at)], Some(k as u64)))
    })
    .await?;
    let mut latencies = Vec::new();
    for counter in counters {
        latencies.extend(counter.await.unwrap_or_default());
    }
    if latencies.is_empty() {
        return Err("no answer arrived in the measured window".into());
    }
    let mut metrics = vec![(
        "messages_per_second".to_string(),
        latencies.len() as f64 / timing.window.as_secs_f64(),
    )];
    latency_metrics(latencies, &mut metrics);
    Ok(metrics)
}

/// Sends message `k` at `t0 + k / rate` until `end`; `frame(k, at)` gives the sink index
/// (taken modulo the number of sinks) and the frame.
async fn schedule(
    sinks: &mut [SplitSink<Socket, Ws>],
    t0: Instant,
    end: Instant,
    rate: u64,
    frame: impl Fn(usize, Instant) -> (usize, Ws),
) -> Result<(), String> {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for k in 0.. {
        let at = t0 + interval * k as u32;
        if at >= end {
            break;
        }
        pace(at).await;
        let (index, frame) = frame(k, at);
        let sinks_len = sinks.len();
        sinks[index % sinks_len]
            .send(frame)
            .await
            .map_err(|e| format!("send failed: {e}"))?;
    }
    Ok(())
}

/// Broadcast (one group of everyone, sent with `Broadcast`) and small groups (`SendToGroup`):
/// `groups` groups of `size` connections; the first member of each sends, `rate` messages/s
/// in total, and every member (the sender too) receives each message.
async fn fan_out(
    server: &Server,
    target: &str,
    groups: usize,
    size: usize,
    rate: u64,
    timing: Timing,
) -> Result<Metrics, String> {
    let protocol = Protocol::Json;
    let wire = Wire::of(target, protocol);
    let broadcast = groups == 1;
    let group_of = |i: usize| format!("g{}", i % groups);
    // In the broadcast case, one extra connection publishes and the `size` others subscribe.
    let total = if broadcast { size + 1 } else { groups * size };
    let mut sockets = connect_many(server, target, protocol, total, |i| Some(group_of(i))).await?;
    if !broadcast && target != "raw" {
        let joins = sockets.iter_mut().enumerate().map(|(i, socket)| {
            let group = group_of(i);
            async move {
                socket
                    .send(wire.call("JoinGroup", &[&group], Some(i as u64)))
                    .await
                    .map_err(|e| e.to_string())?;
                client::next_answer(socket, wire).await
            }
        });
        futures_util::stream::iter(joins)
            .buffer_unordered(100)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, String>>()?;
    }
    // Senders: the publisher (the first socket) or the first `groups` sockets, one per group.
    let senders = if broadcast { 1 } else { groups };
    let mut sinks = Vec::new();
    let mut counters = Vec::new();
    let t0 = Instant::now() + Duration::from_millis(100);
    let start = t0 + timing.warmup;
    let end = start + timing.window;
    let until = end + timing.grace;
    for (i, socket) in sockets.into_iter().enumerate() {
        let (sink, stream) = socket.split();
        if i < senders {
            sinks.push(sink);
        }
        if broadcast && i == 0 {
            // The publisher's own copies are drained but not counted as deliveries.
            counters.push((false, spawn_counter(stream, 0, 0, until)));
        } else {
            counters.push((
                true,
                spawn_counter(stream, micros(start), micros(end), until),
            ));
        }
    }
    let pid = server.pid();
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        cpu_seconds(pid)
    });
    schedule(&mut sinks, t0, end, rate, |k, at| {
        let marked = payload(at);
        let frame = if broadcast {
            wire.call("Broadcast", &[&marked], None)
        } else {
            wire.call("SendToGroup", &[&group_of(k % senders), &marked], None)
        };
        (k % senders, frame)
    })
    .await?;
    let cpu_at_end = cpu_seconds(pid);
    let cpu = (cpu_at_end - cpu_at_start.await.unwrap_or(0.0)).max(0.0);
    let mut latencies = Vec::new();
    for (counted, counter) in counters {
        let received = counter.await.unwrap_or_default();
        if counted {
            latencies.extend(received);
        }
    }
    let count = latencies.len() as f64;
    if count == 0.0 {
        return Err("nothing was delivered in the measured window".into());
    }
    let mut metrics = vec![(
        "deliveries_per_second".to_string(),
        count / timing.window.as_secs_f64(),
    )];
    latency_metrics(latencies, &mut metrics);
    metrics.push((
        "server_cpu_seconds_per_million_deliveries".into(),
        cpu / (count / 1e6),
    ));
    Ok(metrics)
}

/// Idle connections opened in steps; at each, the server's RSS growth per connection since
/// before the first one.
async fn idle(server: &Server, target: &str, levels: &[usize]) -> Result<Metrics, String> {
    let wire = Wire::of(target, Protocol::Json);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(server.pid());
    let mut sockets: Vec<Socket> = Vec::new();
    let mut metrics = Vec::new();
    for &level in levels {
        let more = connect_many(
            server,
            target,
            Protocol::Json,
            level.saturating_sub(sockets.len()),
            |_| None,
        )
        .await?;
        sockets.extend(more);
        if let Wire::SignalR(protocol) = wire {
            // A ping from each client keeps the server's client timeout from firing while the
            // ramp goes on.
            for socket in &mut sockets {
                let ping = protocol.ping_record().to_vec();
                let _ = socket
                    .send(Ws::text(String::from_utf8(ping).expect("utf-8")))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kib(server.pid());
        metrics.push((
            format!("rss_bytes_per_connection_at_{level}"),
            after.saturating_sub(before) as f64 * 1024.0 / level as f64,
        ));
        eprintln!(
            "    {target}: {level} idle connections, server RSS {} KiB (+{} KiB)",
            after,
            after.saturating_sub(before)
        );
    }
    Ok(metrics)
}

/// Connection storm: `concurrency` clients each open a connection the way a SignalR client
/// does (negotiate, WebSocket with the token, handshake; the raw baseline has only the
/// WebSocket), then close it, in a loop. Counts completions and errors inside the window.
async fn storm(
    server: &Server,
    target: &str,
    concurrency: usize,
    timing: Timing,
) -> Result<Metrics, String> {
    // No pooling: every negotiate is a new TCP connection, as with a new client.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())?;
    let port = server.port;
    let start = Instant::now() + timing.warmup;
    let end = start + timing.window;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let http = http.clone();
        let target = target.to_owned();
        workers.push(tokio::spawn(async move {
            let (mut done, mut errors, mut times) = (0u64, 0u64, Vec::new());
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let attempt = async {
                    let url = if target == "raw" {
                        format!("ws://127.0.0.1:{port}/echo")
                    } else {
                        let token = client::negotiate(&http, port).await?;
                        format!("ws://127.0.0.1:{port}/hub?id={token}")
                    };
                    let mut socket = client::open(&url, &target, Protocol::Json).await?;
                    let _ = socket.close(None).await;
                    Ok::<(), String>(())
                };
                let outcome = tokio::time::timeout(Duration::from_secs(10), attempt).await;
                let finished = Instant::now();
                if began >= start && finished < end {
                    match outcome {
                        Ok(Ok(())) => {
                            done += 1;
                            times.push((finished - began).as_micros() as u64);
                        }
                        _ => errors += 1,
                    }
                } else if !matches!(outcome, Ok(Ok(()))) {
                    // Failures outside the window are still failures worth showing.
                    errors += u64::from(began >= start);
                }
            }
            (done, errors, times)
        }));
    }
    let (mut done, mut errors, mut times) = (0, 0, Vec::new());
    for worker in workers {
        let (d, e, t) = worker.await.map_err(|e| e.to_string())?;
        done += d;
        errors += e;
        times.extend(t);
    }
    times.sort_unstable();
    Ok(vec![
        (
            "connections_per_second".into(),
            done as f64 / timing.window.as_secs_f64(),
        ),
        ("errors".into(), errors as f64),
        ("p99_connect_us".into(), quantile(&times, 0.99)),
    ])
}
