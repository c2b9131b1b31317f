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
            while let Some(Ok(frame)) = socket.next().await {
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
    // Warm-up: every subscriber reachable (remote subscriptions in place).
    let mut expected = 0;
    loop {
        let _ = publisher.clients().all().send("Tick", (now_us(),)).await;
        expected += count as u64;
        if wait_for(subscribers, expected, Duration::from_millis(500)).await {
            break;
        }
        expected = subscribers.delivered.load(Ordering::Relaxed);
    }

    // Burst.
    let before = subscribers.delivered.load(Ordering::Relaxed);
    let started = Instant::now();
    // Up to 64 sends in flight, as concurrent hub methods would issue them.
    futures_util::stream::iter(0..burst)
        .for_each_concurrent(64, |_| async move {
            let _ = publisher.clients().all().send("Tick", (now_us(),)).await;
        })
        .await;
    let target = before + burst * count as u64;
    wait_for(subscribers, target, Duration::from_secs(60)).await;
    let landed = subscribers.delivered.load(Ordering::Relaxed) - before;
    let burst_per_second = landed as f64 / started.elapsed().as_secs_f64();
    let lost_in_burst = (burst * count as u64).saturating_sub(landed);

    // Fixed rate, latency from the scheduled send time.
    subscribers.latencies.lock().unwrap().clear();
    let before = subscribers.delivered.load(Ordering::Relaxed);
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let total = rate * seconds;
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let scheduled = due.duration_since(epoch()).as_micros() as u64;
        let _ = publisher.clients().all().send("Tick", (scheduled,)).await;
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
    let (burst, rate, seconds) = if smoke { (50, 50, 1) } else { (500, 100, 5) };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("Bench.Fanout.{}", std::process::id());
    let backplane = || async {
        RedisBackplane::connect(url.as_str(), prefix.as_str())
            .await
            .unwrap_or_else(|e| panic!("Redis at {url}: {e}"))
    };
    println!(
        "fan-out to {count} WebSocket subscribers: burst of {burst} broadcasts, then {rate} broadcasts/s for {seconds} s"
    );

    let mut rows = Vec::new();
    {
        let (port, context) = serve(Hub::builder()).await;
        let subscribers = subscribe(port, count).await;
        let figures = measure(&context, &subscribers, count, burst, rate, seconds).await;
        rows.push(("single process, no backplane", figures));
    }
    {
        let (port, context) = serve(Hub::builder().backplane(backplane().await)).await;
        let subscribers = subscribe(port, count).await;
        let figures = measure(&context, &subscribers, count, burst, rate, seconds).await;
        rows.push(("local, with backplane", figures));
    }
    {
        let (_, publisher) = serve(Hub::builder().backplane(backplane().await)).await;
        let (port, _receiver) = serve(Hub::builder().backplane(backplane().await)).await;
        let subscribers = subscribe(port, count).await;
        let figures = measure(&publisher, &subscribers, count, burst, rate, seconds).await;
        rows.push(("cross-process (A publishes, B delivers)", figures));
    }

    let baseline = rows[0].1.burst_per_second;
    let base_p50 = rows[0].1.p50_ms;
    println!();
    println!("| configuration | burst deliveries/s | vs single | p50 latency (ms) | added p50 (ms) | p99 latency (ms) | lost |");
    println!("|---|---|---|---|---|---|---|");
    for (name, f) in &rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:+.2} | {:.2} | {} |",
            f.burst_per_second,
            f.burst_per_second / baseline,
            f.p50_ms,
            f.p50_ms - base_p50,
            f.p99_ms,
            f.lost
        );
    }
}
