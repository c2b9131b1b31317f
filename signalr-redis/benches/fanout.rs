//! Cross-process fan-out over the Redis backplane, against a single process, in one run.
//!
//! ```text
//! cargo bench -p signalr-redis --bench fanout               # 1,000 subscribers
//! cargo bench -p signalr-redis --bench fanout -- --subscribers 200 --smoke
//! ```
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Every configuration drives
//! the same number of raw WebSocket (JSON) subscribers, all in this process:
//! - **single process**: a hub without a backplane broadcasts to its own clients;
//! - **local, with backplane**: the same, on a hub with the backplane (local clients are served
//!   directly; the publication goes to Redis for the others);
//! - **cross-process**: hub A broadcasts, the subscribers sit on hub B (each hub has its own
//!   Redis connections, as two processes would).
//!
//! Two measurements each: a burst (messages sent with up to 64 in flight; deliveries per second
//! until the last one lands) and a fixed rate (latency from send to delivery, p50/p99).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use signalr_core::{Hub, HubBuilder, HubContext};
use signalr_redis::RedisBackplane;
use tokio::net::TcpListener;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message as Ws;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

struct Subscribers {
    delivered: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve(builder: HubBuilder) -> (u16, HubContext) {
    let hub: Hub = builder.build();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let context = hub.context();
    tokio::spawn(signalr_core::serve_with_shutdown(
        listener,
        "/hub",
        hub,
        std::future::pending(),
    ));
    (port, context)
}

/// `count` raw JSON clients; each records the latency of every `Tick(t)` it receives.
async fn subscribe(port: u16, count: usize) -> Subscribers {
    let delivered = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let (mut socket, _) = connect_async(format!("ws://127.0.0.1:{port}/hub"))
            .await
            .expect("connect");
        socket
            .send(Ws::text("{\"protocol\":\"json\",\"version\":1}\u{1e}"))
            .await
            .expect("handshake");
        let _ = socket.next().await; // the handshake response
        let delivered = delivered.clone();
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            // Real clients ping (every 15 s); the server closes silent ones after 30 s.
            let mut ping = tokio::time::interval(Duration::from_secs(10));
            loop {
                let frame = tokio::select! {
                    frame = socket.next() => frame,
                    _ = ping.tick() => {
                        if socket.send(Ws::text("{\"type\":6}\u{1e}")).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let Some(Ok(frame)) = frame else { break };
                let Ws::Text(text) = frame else { continue };
                let received = now_us();
                for record in text.split('\u{1e}') {
                    let Some(at) = record.find("\"arguments\":[") else {
                        continue;
                    };
                    let digits: String = record[at + 13..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(sent) = digits.parse::<u64>() {
                        mine.push(received.saturating_sub(sent));
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if mine.len() >= 64 {
                    latencies.lock().unwrap().append(&mut mine);
                }
            }
        }));
    }
    Subscribers {
        delivered,
        latencies,
        tasks,
    }
}

struct Figures {
    burst_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
}

async fn wait_for(subscribers: &Subscribers, target: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while subscribers.delivered.load(Ordering::Relaxed) < target {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

async fn measure(
    publisher: &HubContext,
    subscribers: &Subscribers,
    count: usize,
    burst: u64,
    rate: u64,
    seconds: u64,
) -> Figures {
    // Warm-up: one broadcast reaches every subscriber (remote subscriptions in place).
    let mut attempts = 0;
    loop {
        let base = subscribers.delivered.load(Ordering::Relaxed);
        let _ = publisher.clients().all().send("Tick", (now_us(),)).await;
        if wait_for(subscribers, base + count as u64, Duration::from_secs(2)).await {
            break;
        }
        attempts += 1;
        assert!(
            attempts < 5,
            "the subscribers stopped receiving (closed as too slow?)"
        );
    }

    // Burst.
    let before = subscribers.delivered.load(Ordering::Relaxed);
    let started = Instant::now();
    // Up to 64 sends in flight, as concurrent hub methods would issue them, and no subscriber
    // left more than ~256 messages behind on average (its queue holds 1,024; a client that
    // falls further behind is disconnected as too slow, which is not what this measures).
    let sent = AtomicU64::new(0);
    let sent = &sent;
    futures_util::stream::iter(0..burst)
        .for_each_concurrent(64, |_| async move {
            let window = 256 * count as u64;
            while sent.load(Ordering::Relaxed) * count as u64
                > subscribers.delivered.load(Ordering::Relaxed) - before + window
            {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            let _ = publisher.clients().all().send("Tick", (now_us(),)).await;
        })
        .await;
    let target = before + burst * count as u64;
    wait_for(subscribers, target, Duration::from_secs(60)).await;
    let landed = subscribers.delivered.load(Ordering::Relaxed) - before;
    let burst_per_second = landed as f64 / started.elapsed().as_secs_f64();
    let lost_in_burst = (burst * count as u64).saturating_sub(landed);

    // Fixed rate, latency from each send to each delivery.
    subscribers.latencies.lock().unwrap().clear();
    let before = subscribers.delivered.load(Ordering::Relaxed);
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let total = rate * seconds;
    let start = Instant::now();
    for i in 0..total {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        // Not awaited in line: a slow publish must not delay the next one's schedule. The
        // timestamp is taken at the send itself, so the timer's millisecond granularity is
        // not counted as latency.
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let _ = publisher.clients().all().send("Tick", (now_us(),)).await;
        });
    }
    let target = before + total * count as u64;
    wait_for(subscribers, target, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lost = lost_in_burst
        + (total * count as u64)
            .saturating_sub(subscribers.delivered.load(Ordering::Relaxed) - before);
    let mut latencies = std::mem::take(&mut *subscribers.latencies.lock().unwrap());
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Figures {
        burst_per_second,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        lost,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let count: usize = args
        .iter()
        .position(|a| a == "--subscribers")
        .and_then(|p| args.get(p + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 100 } else { 1000 });
    // The rate keeps deliveries (rate x subscribers) well below saturation, so that latency is
    // not queueing.
    let (burst, rate, seconds) = if smoke {
        (50, 20, 1)
    } else {
        // At least 50,000 deliveries per burst, so that it lasts long enough to measure.
        ((50_000 / count as u64).max(500), 20, 5)
    };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // One channel prefix per configuration: hubs of one configuration are one hub; the two
    // configurations must not receive each other's broadcasts.
    let backplane = |configuration: &'static str| {
        let url = url.clone();
        async move {
            let prefix = format!("Bench.Fanout.{}.{configuration}", std::process::id());
            RedisBackplane::connect(url.as_str(), prefix.as_str())
                .await
                .unwrap_or_else(|e| panic!("Redis at {url}: {e}"))
        }
    };
    println!(
        "fan-out to {count} WebSocket subscribers: burst of {burst} broadcasts, then {rate} broadcasts/s for {seconds} s"
    );

    // All three set up first, then measured in turn, three rounds: each figure is the median of
    // three with its range, and drifting machine load hits every configuration alike.
    let (port, single) = serve(Hub::builder()).await;
    let single_subscribers = subscribe(port, count).await;
    let (port, local) = serve(Hub::builder().backplane(backplane("local").await)).await;
    let local_subscribers = subscribe(port, count).await;
    let (_, publisher) = serve(Hub::builder().backplane(backplane("remote").await)).await;
    let (port, _receiver) = serve(Hub::builder().backplane(backplane("remote").await)).await;
    let remote_subscribers = subscribe(port, count).await;
    let setups = [
        ("single process, no backplane", &single, &single_subscribers),
        ("local, with backplane", &local, &local_subscribers),
        (
            "cross-process (A publishes, B delivers)",
            &publisher,
            &remote_subscribers,
        ),
    ];
    let rounds = if smoke { 1 } else { 3 };
    let mut results: Vec<Vec<Figures>> = setups.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, (name, publisher, subscribers)) in setups.iter().enumerate() {
            let figures = measure(publisher, subscribers, count, burst, rate, seconds).await;
            eprintln!(
                "round {}: {name}: {:.0} deliveries/s, p50 {:.2} ms",
                round + 1,
                figures.burst_per_second,
                figures.p50_ms
            );
            results[i].push(figures);
        }
    }

    let stat = |values: Vec<f64>| {
        let mut values = values;
        values.sort_by(|a, b| a.total_cmp(b));
        (
            values[values.len() / 2],
            values[0],
            values[values.len() - 1],
        )
    };
    let medians: Vec<(f64, f64)> = results
        .iter()
        .map(|r| {
            (
                stat(r.iter().map(|f| f.burst_per_second).collect()).0,
                stat(r.iter().map(|f| f.p50_ms).collect()).0,
            )
        })
        .collect();
    println!();
    println!("| configuration | burst deliveries/s: median [min–max] | vs single | p50 latency (ms) | added p50 (ms) | p99 latency (ms) | lost |");
    println!("|---|---|---|---|---|---|---|");
    for (i, (name, _, _)) in setups.iter().enumerate() {
        let (burst, low, high) = stat(results[i].iter().map(|f| f.burst_per_second).collect());
        let (p50, _, _) = stat(results[i].iter().map(|f| f.p50_ms).collect());
        let (p99, _, _) = stat(results[i].iter().map(|f| f.p99_ms).collect());
        let lost: u64 = results[i].iter().map(|f| f.lost).sum();
        println!(
            "| {name} | {burst:.0} [{low:.0}–{high:.0}] | {:.2} | {p50:.2} | {:+.2} | {p99:.2} | {lost} |",
            burst / medians[0].0,
            p50 - medians[0].1,
        );
    }
}
