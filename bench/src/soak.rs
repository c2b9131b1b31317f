//! `signalr-bench soak`: a long mixed load with connection churn, and whether the server's
//! memory and open files come back down once the churn stops (issue 16).
//!
//! The run has three phases: steady load only (the first 10 %), steady load plus churn (70 %),
//! steady load only again (the last 20 %). The steady load is a few connections on every
//! transport and protocol (WebSockets with JSON and MessagePack, long polling with both,
//! Server-Sent Events with JSON) calling `Echo` ten times a second each. Churn workers open
//! connections in a loop on the same mixes, call `Echo` a few times, sometimes join a group and
//! send to it, and end them: gracefully (WebSocket close, long-polling DELETE, closing the event
//! stream) or abruptly (a WebSocket reset with RST; an HTTP client that just goes away). Each
//! steady connection has its own HTTP client and the churn another, so that after the churn the
//! steady load runs on the sockets it had before it. Every second the server's RSS
//! (`/proc/PID/status` VmRSS, and its anonymous part) and open files (`/proc/PID/fd`) are
//! sampled, into a CSV if asked; the summary compares the end of the run with the end of the
//! first phase.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use signalr_core::protocol::Protocol;

use crate::client::{self, frame_bytes, markers, payload, HttpConnection, HttpTransport, Socket};
use crate::client::{negotiate, Wire};
use crate::servers::{self, cpu_seconds, rss_anon_kib, rss_kib};

/// What one `soak` run does.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub duration: Duration,
    /// Where the per-second samples go, if anywhere.
    pub csv: Option<std::path::PathBuf>,
    /// Concurrent churn loops.
    pub workers: usize,
    /// Steady connections per transport and protocol.
    pub steady: usize,
    /// Only the transport/protocol mixes whose name contains this, or one of several parts
    /// separated by commas (`websockets`, `json`, `websockets,server_sent_events`, ...), to
    /// find which one a growth comes from.
    pub only: Option<String>,
}

/// Share of the run before the churn starts, and with it stopped at the end.
const BEFORE_FRACTION: f64 = 0.10;
const AFTER_FRACTION: f64 = 0.20;

/// Open files at which churn pauses, on either side: the rule is at most 20,000 per process.
const OPEN_FILES_CEILING: usize = 18_000;

/// The shortest churn-stopped phase in which the figure "after" means something: a long-polling
/// client that vanished is let go after the disconnect timeout (15 s) and its token is kept
/// for as long again, and allocators return freed pages over some seconds after that.
const AFTER_PHASE_NEEDED: Duration = Duration::from_secs(45);

/// How long any one call may take before it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    WebSockets,
    LongPolling,
    ServerSentEvents,
}

/// Every transport with every protocol it carries (Server-Sent Events are text only).
const MIXES: [(Transport, Protocol); 5] = [
    (Transport::WebSockets, Protocol::Json),
    (Transport::WebSockets, Protocol::MessagePack),
    (Transport::LongPolling, Protocol::Json),
    (Transport::LongPolling, Protocol::MessagePack),
    (Transport::ServerSentEvents, Protocol::Json),
];

fn mix_name((transport, protocol): (Transport, Protocol)) -> String {
    let transport = match transport {
        Transport::WebSockets => "websockets",
        Transport::LongPolling => "long_polling",
        Transport::ServerSentEvents => "server_sent_events",
    };
    format!("{transport}_{protocol}")
}

/// The phase a moment of the run belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Before,
    Churn,
    After,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::Churn => "churn",
            Phase::After => "after",
        }
    }
}

/// One connection of the soak, on any transport.
enum Connection {
    WebSocket(Box<Socket>, Protocol),
    Http(HttpConnection, Protocol),
}

impl Connection {
    /// Opens a connection; WebSockets negotiate first when `negotiate` (as the official clients
    /// do) or skip it (as clients with `skipNegotiation` do).
    async fn open(
        port: u16,
        http: &reqwest::Client,
        (transport, protocol): (Transport, Protocol),
        negotiated: bool,
    ) -> Result<Connection, String> {
        let opening = async {
            match transport {
                Transport::WebSockets => {
                    let url = if negotiated {
                        let token = negotiate(http, port).await?;
                        format!("ws://127.0.0.1:{port}/hub?id={token}")
                    } else {
                        format!("ws://127.0.0.1:{port}/hub")
                    };
                    let socket = client::open(&url, "ours", protocol).await?;
                    Ok(Connection::WebSocket(Box::new(socket), protocol))
                }
                Transport::LongPolling | Transport::ServerSentEvents => {
                    let kind = if transport == Transport::LongPolling {
                        HttpTransport::LongPolling
                    } else {
                        HttpTransport::ServerSentEvents
                    };
                    let connection = HttpConnection::connect(http, port, kind, protocol).await?;
                    Ok(Connection::Http(connection, protocol))
                }
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, opening)
            .await
            .map_err(|_| "connecting timed out".to_string())?
    }

    /// Sends an invocation without waiting for anything.
    async fn send(&mut self, method: &str, args: &[&str], id: Option<u64>) -> Result<(), String> {
        match self {
            Connection::WebSocket(socket, protocol) => socket
                .send(Wire::SignalR(*protocol).call(method, args, id))
                .await
                .map_err(|e| e.to_string()),
            Connection::Http(connection, protocol) => {
                let frame = Wire::SignalR(*protocol).call(method, args, id);
                let body = frame_bytes(&frame).unwrap_or_default().to_vec();
                connection.send(body).await
            }
        }
    }

    /// Waits for a received message for which `wanted` holds, skipping others (keep-alives,
    /// group messages).
    async fn wait_for(&mut self, wanted: impl Fn(&[u8]) -> bool) -> Result<(), String> {
        let waiting = async {
            match self {
                Connection::WebSocket(socket, protocol) => {
                    let wire = Wire::SignalR(*protocol);
                    loop {
                        match futures_util::StreamExt::next(socket.as_mut()).await {
                            Some(Ok(frame)) if wire.is_ping(&frame) => continue,
                            Some(Ok(frame)) => {
                                if frame_bytes(&frame).is_some_and(&wanted) {
                                    return Ok(());
                                }
                            }
                            Some(Err(e)) => return Err(e.to_string()),
                            None => return Err("closed by the server".into()),
                        }
                    }
                }
                Connection::Http(connection, _) => loop {
                    match connection.received.recv().await {
                        Some(data) if wanted(&data) => return Ok(()),
                        Some(_) => continue,
                        None => return Err("closed by the server".into()),
                    }
                },
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, waiting)
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
    }

    /// `Echo` and its answer, recognised by the timestamp marker it carries back.
    async fn echo(&mut self, id: u64) -> Result<(), String> {
        self.send("Echo", &[&payload(Instant::now())], Some(id))
            .await?;
        self.wait_for(|data| markers(data).next().is_some()).await
    }

    /// `JoinGroup` and its completion, the first message on a connection that is in no group.
    async fn join(&mut self, group: &str, id: u64) -> Result<(), String> {
        self.send("JoinGroup", &[group], Some(id)).await?;
        self.wait_for(|_| true).await
    }

    /// Ends the connection: a close the client announces, or one it does not.
    async fn end(self, abrupt: bool) -> Result<(), String> {
        match (self, abrupt) {
            (Connection::WebSocket(socket, _), true) => {
                client::reset(*socket);
                Ok(())
            }
            (Connection::WebSocket(mut socket, _), false) => {
                let closing = async {
                    tokio_tungstenite::WebSocketStream::close(&mut *socket, None)
                        .await
                        .map_err(|e| e.to_string())?;
                    // Read to the end, so that the server's Close is seen.
                    while let Some(Ok(_)) = futures_util::StreamExt::next(socket.as_mut()).await {}
                    Ok(())
                };
                tokio::time::timeout(CALL_TIMEOUT, closing)
                    .await
                    .map_err(|_| "close timed out".to_string())?
            }
            // The client goes away without a word: its requests are dropped.
            (Connection::Http(connection, _), true) => {
                drop(connection);
                Ok(())
            }
            (Connection::Http(connection, _), false) => {
                tokio::time::timeout(CALL_TIMEOUT, connection.close())
                    .await
                    .map_err(|_| "DELETE timed out".to_string())?
            }
        }
    }
}

/// Counts shared by every task of the run.
#[derive(Default)]
struct Counts {
    opened: [AtomicU64; MIXES.len()],
    resets: AtomicU64,
    abandoned: AtomicU64,
    graceful: AtomicU64,
    echoes: AtomicU64,
    group_sends: AtomicU64,
    errors: AtomicU64,
    /// The first few distinct error messages, for the summary.
    first_errors: Mutex<Vec<String>>,
    /// Set while either side is near the open-files ceiling.
    throttled: AtomicBool,
}

impl Counts {
    fn error(&self, what: &str, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().expect("errors");
        let line = format!("{what}: {error}");
        if first.len() < 8 && !first.contains(&line) {
            first.push(line);
        }
    }

    fn opened_total(&self) -> u64 {
        self.opened.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

/// A small xorshift generator: the churn's choices need spread, not quality.
struct Choices(u64);

impl Choices {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// One steady connection: `Echo` ten times a second until `end`, reconnecting after an error.
async fn steady(
    port: u16,
    http: reqwest::Client,
    mix: (Transport, Protocol),
    index: usize,
    end: Instant,
    counts: Arc<Counts>,
) {
    let mut id = 0u64;
    while Instant::now() < end {
        let mut connection = match Connection::open(port, &http, mix, index % 2 == 1).await {
            Ok(connection) => connection,
            Err(e) => {
                counts.error("steady connect", e);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        counts.opened[MIXES.iter().position(|m| *m == mix).unwrap_or(0)]
            .fetch_add(1, Ordering::Relaxed);
        // Steady members of a group receive what the churn sends to it.
        id += 1;
        if let Err(e) = connection.join(&format!("g{}", index % 100), id).await {
            counts.error("steady join", e);
            continue;
        }
        let mut failed = false;
        while Instant::now() < end {
            id += 1;
            if let Err(e) = connection.echo(id).await {
                counts.error("steady echo", e);
                failed = true;
                break;
            }
            counts.echoes.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !failed {
            let _ = connection.end(false).await;
        }
    }
}

/// One churn loop from `start` to `end`: open, call, end, again.
async fn churn(
    port: u16,
    http: reqwest::Client,
    mixes: Vec<usize>,
    worker: usize,
    start: Instant,
    end: Instant,
    counts: Arc<Counts>,
) {
    tokio::time::sleep_until(start.into()).await;
    let mut choose = Choices(0x9e37_79b9_7f4a_7c15 ^ (worker as u64 + 1).wrapping_mul(0x2545_f491));
    let mut id = 0u64;
    while Instant::now() < end {
        if counts.throttled.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mix_index = mixes[choose.next(mixes.len() as u64) as usize];
        let mix = MIXES[mix_index];
        let mut connection = match Connection::open(port, &http, mix, choose.next(2) == 0).await {
            Ok(connection) => connection,
            Err(e) => {
                counts.error(&format!("churn connect {}", mix_name(mix)), e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        counts.opened[mix_index].fetch_add(1, Ordering::Relaxed);
        let work = async {
            if choose.next(4) == 0 {
                let group = format!("g{}", choose.next(100));
                id += 1;
                connection.join(&group, id).await?;
                connection
                    .send("SendToGroup", &[&group, "from the churn"], None)
                    .await?;
                counts.group_sends.fetch_add(1, Ordering::Relaxed);
            }
            for _ in 0..=choose.next(4) {
                id += 1;
                connection.echo(id).await?;
                counts.echoes.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        };
        if let Err(e) = work.await {
            counts.error(&format!("churn call {}", mix_name(mix)), e);
            drop(connection);
            continue;
        }
        // Four in ten leave abruptly: a reset on WebSockets, silence over HTTP.
        let abrupt = choose.next(10) < 4;
        let ended = match connection.end(abrupt).await {
            Ok(()) if abrupt && mix.0 == Transport::WebSockets => &counts.resets,
            Ok(()) if abrupt => &counts.abandoned,
            Ok(()) => &counts.graceful,
            Err(e) => {
                counts.error(&format!("churn close {}", mix_name(mix)), e);
                continue;
            }
        };
        ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// An HTTP client for the generator, keeping up to `idle` connections for reuse.
fn http_client(idle: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(idle)
        .build()
        .map_err(|e| e.to_string())
}

/// Files a process has open, from `/proc/PID/fd`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// One second's reading.
#[derive(Clone, Debug)]
pub struct Sample {
    pub seconds: f64,
    pub phase: Phase,
    pub rss_kib: u64,
    /// The heap and stacks alone (`RssAnon`), without the executable's pages.
    pub rss_anon_kib: u64,
    pub open_files: usize,
    /// jemalloc's own counts, when the server is built with it.
    pub allocator: Option<servers::AllocatorCounts>,
}

/// Before (the end of the first phase), peak and after (the end of the run) of one figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Levels {
    pub before: f64,
    pub peak: f64,
    pub after: f64,
}

impl Levels {
    pub fn ratio(&self) -> f64 {
        if self.before > 0.0 {
            self.after / self.before
        } else {
            0.0
        }
    }
}

/// The median of the last three samples of `phase` (one slow sample does not decide it).
fn settled(samples: &[Sample], phase: Phase, value: impl Fn(&Sample) -> f64) -> f64 {
    let mut last: Vec<f64> = samples
        .iter()
        .filter(|s| s.phase == phase)
        .rev()
        .take(3)
        .map(&value)
        .collect();
    last.sort_by(f64::total_cmp);
    last.get(last.len() / 2).copied().unwrap_or(0.0)
}

/// RSS and its anonymous part (KiB), and open files: before the churn, at their peak, and
/// after it stopped.
pub fn summarize(samples: &[Sample]) -> (Levels, Levels, Levels) {
    let levels = |value: &dyn Fn(&Sample) -> f64| Levels {
        before: settled(samples, Phase::Before, value),
        peak: samples.iter().map(value).fold(0.0, f64::max),
        after: settled(samples, Phase::After, value),
    };
    (
        levels(&|s| s.rss_kib as f64),
        levels(&|s| s.rss_anon_kib as f64),
        levels(&|s| s.open_files as f64),
    )
}

/// The requirement: RSS back within 20 % of its level before the churn.
const RSS_RATIO_TARGET: f64 = 1.20;

pub async fn run(options: &SoakOptions) -> Result<Value, String> {
    let mixes: Vec<usize> = (0..MIXES.len())
        .filter(|&i| {
            options.only.as_ref().is_none_or(|only| {
                only.split(',')
                    .any(|part| mix_name(MIXES[i]).contains(part))
            })
        })
        .collect();
    if mixes.is_empty() {
        return Err(format!(
            "no transport/protocol mix matches {:?}",
            options.only
        ));
    }
    // A server built with jemalloc reports its allocator's counts through this file.
    let alloc_stats_path =
        std::env::temp_dir().join(format!("signalr-bench-alloc-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&alloc_stats_path);
    let alloc_stats = alloc_stats_path.display().to_string();
    let server =
        servers::start_with_env("ours", &[(servers::ALLOC_STATS_SETTING, &alloc_stats)]).await?;
    let pid = server.pid();
    let port = server.port;
    let total = options.duration.as_secs_f64();
    let began = Instant::now();
    let churn_start = began + options.duration.mul_f64(BEFORE_FRACTION);
    let churn_end = began + options.duration.mul_f64(1.0 - AFTER_FRACTION);
    let end = began + options.duration;
    let phase_at = |at: Instant| {
        if at < churn_start {
            Phase::Before
        } else if at < churn_end {
            Phase::Churn
        } else {
            Phase::After
        }
    };
    // The churn's HTTP/1 connections are pooled apart from the steady ones, and the pool goes
    // with the churn's last task. A steady connection has a pool of its own, so it keeps the
    // sockets it opened before the churn. With one shared pool, keep-alive sockets opened in
    // the middle of the burst outlived it, carrying the steady long-polling and SSE requests:
    // the server connections after the churn were not the ones from before it, and each,
    // allocated among the burst's objects, kept pages of them resident (BENCHMARKS.md, soak).
    let churn_http = http_client(256)?;
    let counts = Arc::new(Counts::default());
    let mut csv = match &options.csv {
        Some(path) => {
            let mut file =
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            writeln!(
                file,
                "seconds,phase,server_rss_kib,server_open_files,server_cpu_seconds,\
                 generator_open_files,connections_opened,resets,abandoned,graceful,echoes,errors,\
                 server_allocated_kib,server_active_kib,server_resident_kib,server_metadata_kib,\
                 server_retained_kib,server_rss_anon_kib"
            )
            .map_err(|e| e.to_string())?;
            Some(file)
        }
        None => None,
    };
    eprintln!(
        "soak: {total:.0} s on port {port} (steady only until {:.0} s, churn until {:.0} s, \
         then steady only); allocator: {}",
        total * BEFORE_FRACTION,
        total * (1.0 - AFTER_FRACTION),
        crate::allocator()
    );
    if options.duration.mul_f64(AFTER_FRACTION) < AFTER_PHASE_NEEDED {
        eprintln!(
            "note: the churn-stopped phase is {:.0} s, under the {} s that connections which \
             ended last need to be let go; read \"after\" as an upper bound",
            total * AFTER_FRACTION,
            AFTER_PHASE_NEEDED.as_secs()
        );
    }
    let mut tasks = Vec::new();
    // The steady connections outlive the last sample, so that their closing is not sampled.
    let steady_end = end + Duration::from_secs(2);
    for &mix in &mixes {
        let mix = MIXES[mix];
        for index in 0..options.steady {
            // Two sockets for an HTTP transport (the poll or stream, and the sends); none
            // kept for a WebSocket's negotiate, which would otherwise sit idle in the level
            // before the churn until the pool's idle timeout (90 s) closed it.
            let idle = if mix.0 == Transport::WebSockets { 0 } else { 2 };
            tasks.push(tokio::spawn(steady(
                port,
                http_client(idle)?,
                mix,
                index,
                steady_end,
                counts.clone(),
            )));
        }
    }
    for worker in 0..options.workers {
        tasks.push(tokio::spawn(churn(
            port,
            churn_http.clone(),
            mixes.clone(),
            worker,
            churn_start,
            churn_end,
            counts.clone(),
        )));
    }
    drop(churn_http);
    let mut samples = Vec::new();
    let progress_every = (options.duration / 30).max(Duration::from_secs(5));
    let mut next_progress = began + progress_every;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut churn_counts_at_stop = None;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let phase = phase_at(now);
        let sample = Sample {
            seconds: (now - began).as_secs_f64(),
            phase,
            rss_kib: rss_kib(pid),
            rss_anon_kib: rss_anon_kib(pid),
            open_files: open_files(pid),
            allocator: servers::AllocatorCounts::read(&alloc_stats_path),
        };
        let own_files = open_files(std::process::id());
        counts.throttled.store(
            sample.open_files.max(own_files) >= OPEN_FILES_CEILING,
            Ordering::Relaxed,
        );
        if phase == Phase::After && churn_counts_at_stop.is_none() {
            churn_counts_at_stop = Some(counts.opened_total());
        }
        if let Some(file) = &mut csv {
            writeln!(
                file,
                "{:.1},{},{},{},{:.2},{},{},{},{},{},{},{},{},{}",
                sample.seconds,
                phase.name(),
                sample.rss_kib,
                sample.open_files,
                cpu_seconds(pid),
                own_files,
                counts.opened_total(),
                counts.resets.load(Ordering::Relaxed),
                counts.abandoned.load(Ordering::Relaxed),
                counts.graceful.load(Ordering::Relaxed),
                counts.echoes.load(Ordering::Relaxed),
                counts.errors.load(Ordering::Relaxed),
                sample.allocator.map_or(",,,,".to_string(), |a| {
                    [a.allocated, a.active, a.resident, a.metadata, a.retained]
                        .map(|v| (v / 1024).to_string())
                        .join(",")
                }),
                sample.rss_anon_kib,
            )
            .map_err(|e| e.to_string())?;
        }
        if now >= next_progress {
            next_progress += progress_every;
            eprintln!(
                "  {:>5.0} s {:<6} server RSS {} KiB, {} open files; {} connections opened, {} errors",
                sample.seconds,
                phase.name(),
                sample.rss_kib,
                sample.open_files,
                counts.opened_total(),
                counts.errors.load(Ordering::Relaxed)
            );
        }
        samples.push(sample);
        if now >= end {
            break;
        }
    }
    // The steady connections end gracefully at `end`; give them a bounded moment.
    for task in tasks {
        if tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .is_err()
        {
            counts.error("shutdown", "a task did not finish within 15 s".into());
        }
    }
    let (rss, anon, files) = summarize(&samples);
    let _ = std::fs::remove_file(&alloc_stats_path);
    // Where the RSS that is left went, when the allocator says.
    let allocator = samples.iter().any(|s| s.allocator.is_some()).then(|| {
        let kib = |pick: fn(&servers::AllocatorCounts) -> u64| {
            let value = move |s: &Sample| {
                s.allocator
                    .as_ref()
                    .map_or(0.0, |a| pick(a) as f64 / 1024.0)
            };
            json!({
                "before": settled(&samples, Phase::Before, value),
                "peak": samples.iter().map(value).fold(0.0, f64::max),
                "after": settled(&samples, Phase::After, value),
            })
        };
        json!({
            "allocated": kib(|a| a.allocated),
            "active": kib(|a| a.active),
            "resident": kib(|a| a.resident),
            "metadata": kib(|a| a.metadata),
        })
    });
    let churn_seconds = total * (1.0 - AFTER_FRACTION - BEFORE_FRACTION);
    let opened: serde_json::Map<String, Value> = mixes
        .iter()
        .map(|&i| {
            let opened = counts.opened[i].load(Ordering::Relaxed);
            (mix_name(MIXES[i]), opened.into())
        })
        .collect();
    let churned = churn_counts_at_stop.unwrap_or_else(|| counts.opened_total());
    Ok(json!({
        "machine": crate::machine(),
        "allocator": crate::allocator(),
        "duration_seconds": total,
        "churn_seconds": churn_seconds,
        "churn_workers": options.workers,
        "steady_connections": options.steady * mixes.len(),
        "connections_opened": opened,
        "connections_opened_per_churn_second": churned as f64 / churn_seconds.max(1.0),
        "resets": counts.resets.load(Ordering::Relaxed),
        "abandoned": counts.abandoned.load(Ordering::Relaxed),
        "graceful_closes": counts.graceful.load(Ordering::Relaxed),
        "echoes": counts.echoes.load(Ordering::Relaxed),
        "group_sends": counts.group_sends.load(Ordering::Relaxed),
        "errors": counts.errors.load(Ordering::Relaxed),
        "first_errors": counts.first_errors.lock().expect("errors").clone(),
        "rss_kib": {"before": rss.before, "peak": rss.peak, "after": rss.after},
        "rss_after_over_before": rss.ratio(),
        "rss_within_20_percent": rss.ratio() <= RSS_RATIO_TARGET,
        "rss_anon_kib": {"before": anon.before, "peak": anon.peak, "after": anon.after},
        "rss_anon_after_over_before": anon.ratio(),
        "open_files": {"before": files.before, "peak": files.peak, "after": files.after},
        "allocator_kib": allocator,
        "server_cpu_seconds": cpu_seconds(pid),
    }))
}

/// The human-readable summary.
pub fn print(report: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mib = |v: &Value| f(v) / 1024.0;
    println!("machine: {}", report["machine"].as_str().unwrap_or(""));
    println!("allocator: {}", report["allocator"].as_str().unwrap_or(""));
    println!(
        "{:.0} s: {} steady connections throughout, {} churn workers for {:.0} s",
        f(&report["duration_seconds"]),
        report["steady_connections"],
        report["churn_workers"],
        f(&report["churn_seconds"]),
    );
    let opened = report["connections_opened"].as_object();
    let total: f64 = opened.into_iter().flatten().map(|(_, n)| f(n)).sum();
    println!(
        "connections opened: {total:.0} ({:.0}/s while churning; {}), {} reset with RST, {} abandoned, {} closed gracefully",
        f(&report["connections_opened_per_churn_second"]),
        opened
            .into_iter()
            .flatten()
            .map(|(mix, n)| format!("{mix} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        report["resets"],
        report["abandoned"],
        report["graceful_closes"],
    );
    println!(
        "calls: {} echoes, {} group sends; {} errors",
        report["echoes"], report["group_sends"], report["errors"]
    );
    for error in report["first_errors"].as_array().into_iter().flatten() {
        println!("  error: {}", error.as_str().unwrap_or(""));
    }
    let rss = &report["rss_kib"];
    println!(
        "server RSS: before churn {:.1} MiB, peak {:.1} MiB, after churn stopped {:.1} MiB; after/before {:.2} ({})",
        mib(&rss["before"]),
        mib(&rss["peak"]),
        mib(&rss["after"]),
        f(&report["rss_after_over_before"]),
        if report["rss_within_20_percent"].as_bool() == Some(true) {
            "within 20 %"
        } else {
            "NOT within 20 %"
        }
    );
    let anon = &report["rss_anon_kib"];
    println!(
        "  of which anonymous (heap, stacks): before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB; after/before {:.2}",
        mib(&anon["before"]),
        mib(&anon["peak"]),
        mib(&anon["after"]),
        f(&report["rss_anon_after_over_before"]),
    );
    if let Some(counts) = report.get("allocator_kib").filter(|v| v.is_object()) {
        for (name, what) in [
            ("allocated", "in use by the program"),
            ("active", "in pages holding something"),
            ("resident", "resident, as jemalloc counts it"),
            ("metadata", "jemalloc's own bookkeeping"),
        ] {
            let levels = &counts[name];
            println!(
                "  jemalloc {name:<9} ({what}): before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
                mib(&levels["before"]),
                mib(&levels["peak"]),
                mib(&levels["after"]),
            );
        }
    }
    let files = &report["open_files"];
    println!(
        "server open files: before churn {:.0}, peak {:.0}, after churn stopped {:.0}",
        f(&files["before"]),
        f(&files["peak"]),
        f(&files["after"]),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seconds: f64, phase: Phase, rss_kib: u64, open_files: usize) -> Sample {
        Sample {
            seconds,
            phase,
            rss_kib,
            rss_anon_kib: rss_kib,
            open_files,
            allocator: None,
        }
    }

    #[test]
    fn levels_come_from_the_end_of_the_first_and_last_phases() {
        let samples = [
            sample(1.0, Phase::Before, 9_000, 20),
            sample(2.0, Phase::Before, 10_000, 30),
            sample(3.0, Phase::Before, 10_100, 31),
            sample(4.0, Phase::Before, 9_900, 29),
            sample(5.0, Phase::Churn, 50_000, 900),
            sample(6.0, Phase::Churn, 40_000, 700),
            sample(7.0, Phase::After, 30_000, 100),
            sample(8.0, Phase::After, 12_500, 35),
            // One stray sample does not decide the level: the median of the last three does.
            sample(9.0, Phase::After, 20_000, 30),
            sample(10.0, Phase::After, 12_000, 32),
        ];
        let (rss, anon, files) = summarize(&samples);
        assert_eq!(
            anon, rss,
            "the helper's samples have as much anonymous RSS as RSS"
        );
        assert_eq!(
            rss,
            Levels {
                before: 10_000.0,
                peak: 50_000.0,
                after: 12_500.0
            }
        );
        assert_eq!(rss.ratio(), 1.25);
        assert_eq!(
            files,
            Levels {
                before: 30.0,
                peak: 900.0,
                after: 32.0
            }
        );
    }

    #[test]
    fn a_run_without_samples_has_no_ratio() {
        let (rss, _, _) = summarize(&[]);
        assert_eq!(rss.ratio(), 0.0);
    }

    #[test]
    fn every_transport_and_protocol_is_in_the_mix() {
        let names: Vec<String> = MIXES.iter().map(|m| mix_name(*m)).collect();
        assert_eq!(
            names,
            [
                "websockets_json",
                "websockets_messagepack",
                "long_polling_json",
                "long_polling_messagepack",
                "server_sent_events_json"
            ]
        );
    }
}
