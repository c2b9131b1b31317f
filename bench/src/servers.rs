//! The servers under test: our hub and the raw tokio-tungstenite baseline (both served by this
//! binary's `serve` subcommand), and the peers (aiosignalr, Socket.IO) from the scratch install
//! made by `bench/peers/setup.sh`. Each runs as a child process, pinned to core 0 when `taskset`
//! exists, and announces its port with a `LISTENING <port>` line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use signalr_core::protocol::Payload;
use signalr_core::{Clients, Context, Hub, HubError};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Ws;

/// The buffer settings shared by the baseline and our WebSocket transport.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
}

/// `signalr-bench serve ours|raw|socketioxide`: binds a loopback port, prints it, serves until killed.
pub async fn serve(target: &str) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!(
        "LISTENING {}",
        listener.local_addr().expect("address").port()
    );
    match target {
        "ours" => {
            trim_periodically();
            report_allocator_periodically();
            // The idle ramp opens 19,000 connections, past the default cap of 10,000; this
            // process holds little else, so the 20,000-file limit is what bounds it.
            let options = signalr_core::ServeOptions::default().max_connections(None);
            let _ = signalr_core::serve_with(
                listener,
                "/hub",
                bench_hub().await,
                options,
                std::future::pending(),
            )
            .await;
        }
        "socketioxide" => serve_socketioxide(listener).await,
        _ => serve_raw(listener).await,
    }
}

/// socketioxide (the Rust Socket.IO server) with the Socket.IO peer's four events, as a hyper
/// service the way its hyper example serves it: WebSocket transport only, pings once a minute,
/// like `peers/socketio-server.mjs`.
async fn serve_socketioxide(listener: TcpListener) {
    use socketioxide::extract::{AckSender, Data, SocketRef};
    use socketioxide::{SocketIo, TransportType};

    let (service, io) = SocketIo::builder()
        .transports([TransportType::Websocket])
        .ping_interval(Duration::from_secs(60))
        .ping_timeout(Duration::from_secs(60))
        .build_svc();
    io.ns("/", async |socket: SocketRef| {
        socket.on(
            "Echo",
            async |socket: SocketRef, Data(value): Data<String>| {
                let _ = socket.emit("Echo", &value);
            },
        );
        socket.on(
            "Broadcast",
            async |io: SocketIo, Data(value): Data<String>| {
                let _ = io.emit("Msg", &value).await;
            },
        );
        // Acknowledged, so the generator knows the membership is in place before it sends.
        socket.on(
            "JoinGroup",
            async |socket: SocketRef, Data(group): Data<String>, ack: AckSender| {
                socket.join(group);
                let _ = ack.send(&());
            },
        );
        socket.on(
            "SendToGroup",
            async |io: SocketIo, Data((group, value)): Data<(String, String)>| {
                let _ = io.to(group).emit("Msg", &value).await;
            },
        );
    });
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        });
    }
}

/// The environment variable that makes `serve ours` return freed memory to the system every
/// so many seconds with glibc's `malloc_trim` (an alternative to changing the allocator).
pub const MALLOC_TRIM_SETTING: &str = "SIGNALR_BENCH_MALLOC_TRIM_SECS";

/// Starts the `malloc_trim` loop when asked for and the allocator is glibc's.
fn trim_periodically() {
    let Some(every) = std::env::var(MALLOC_TRIM_SETTING)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
    else {
        return;
    };
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        not(any(feature = "jemalloc", feature = "mimalloc"))
    ))]
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(every));
        loop {
            tick.tick().await;
            // SAFETY: malloc_trim only walks glibc's own heap under its locks; it takes no
            // pointers from us.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
    #[cfg(not(all(
        target_os = "linux",
        target_env = "gnu",
        not(any(feature = "jemalloc", feature = "mimalloc"))
    )))]
    eprintln!("{MALLOC_TRIM_SETTING}={every}: ignored, the allocator is not glibc's");
}

/// The environment variable naming a file that `serve ours`, built with jemalloc, rewrites every
/// second with the allocator's own counts: `allocated active resident metadata retained`, in
/// bytes. `soak` sets it, so that RSS left after churn can be told apart into memory still in
/// use (allocated), pages held by partly used slabs (active - allocated) and pages not yet given
/// back (resident - active - metadata).
pub const ALLOC_STATS_SETTING: &str = "SIGNALR_BENCH_ALLOC_STATS";

/// jemalloc's counts, as `serve ours` writes them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AllocatorCounts {
    pub allocated: u64,
    pub active: u64,
    pub resident: u64,
    pub metadata: u64,
    pub retained: u64,
}

impl AllocatorCounts {
    /// Reads the file `serve ours` writes; `None` when it is missing or not yet whole.
    pub fn read(path: &std::path::Path) -> Option<AllocatorCounts> {
        let text = std::fs::read_to_string(path).ok()?;
        let values: Vec<u64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        match values[..] {
            [allocated, active, resident, metadata, retained] => Some(AllocatorCounts {
                allocated,
                active,
                resident,
                metadata,
                retained,
            }),
            _ => None,
        }
    }
}

/// Starts the allocator report when asked for and the allocator is jemalloc.
fn report_allocator_periodically() {
    let Some(path) = std::env::var_os(ALLOC_STATS_SETTING).map(PathBuf::from) else {
        return;
    };
    #[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
    tokio::spawn(async move {
        use tikv_jemalloc_ctl::{epoch, stats};
        let partial = path.with_extension("partial");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // SIGUSR1 writes jemalloc's full report (per size class: regions in use, slabs) beside
        // the counts, to see which objects hold partly used pages after a churn.
        let mut dump =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                .expect("SIGUSR1 handler");
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = dump.recv() => {
                    let mut report = Vec::new();
                    let _ = tikv_jemalloc_ctl::stats_print::stats_print(
                        &mut report,
                        tikv_jemalloc_ctl::stats_print::Options::default(),
                    );
                    let _ = std::fs::write(path.with_extension("dump"), report);
                    continue;
                }
            }
            // The counts are a snapshot taken when the epoch advances.
            if epoch::advance().is_err() {
                continue;
            }
            let read = (|| {
                Some([
                    stats::allocated::read().ok()?,
                    stats::active::read().ok()?,
                    stats::resident::read().ok()?,
                    stats::metadata::read().ok()?,
                    stats::retained::read().ok()?,
                ])
            })();
            let Some(values) = read else { continue };
            let line = values.map(|v| v.to_string()).join(" ");
            // Written aside and renamed, so a reader never sees half a line.
            if std::fs::write(&partial, line).is_ok() {
                let _ = std::fs::rename(&partial, &path);
            }
        }
    });
    #[cfg(not(all(feature = "jemalloc", not(feature = "mimalloc"))))]
    eprintln!(
        "{ALLOC_STATS_SETTING}={}: ignored, the allocator is not jemalloc",
        path.display()
    );
}

/// The environment variable that sets our server's WebSocket read buffer (bytes), to compare
/// what tungstenite's zeroing of it costs small messages against the reads large ones take.
pub const WS_READ_BUFFER_SETTING: &str = "SIGNALR_BENCH_WS_READ_BUFFER";

/// The hub every SignalR target exposes: echo, broadcast to all, and groups.
/// With `SIGNALR_BENCH_REDIS` (a Redis URL) and `SIGNALR_BENCH_REDIS_PREFIX` set, the hub
/// joins the Redis backplane under that prefix, so that several `serve ours` processes act as
/// one hub (`scale`).
async fn bench_hub() -> Hub {
    let mut builder = Hub::builder();
    if let Ok(url) = std::env::var("SIGNALR_BENCH_REDIS") {
        let prefix =
            std::env::var("SIGNALR_BENCH_REDIS_PREFIX").unwrap_or_else(|_| "Bench.Hub".into());
        match signalr_redis::RedisBackplane::connect(url.as_str(), prefix).await {
            Ok(backplane) => builder = builder.backplane(backplane),
            Err(e) => {
                eprintln!("the Redis backplane at {url}: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(bytes) = std::env::var(WS_READ_BUFFER_SETTING)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.websocket_read_buffer_size(bytes);
    }
    builder
        .method("Echo", |value: Payload| async move { value })
        .method("Broadcast", |clients: Clients, value: Payload| async move {
            clients.all().send("Msg", (value,)).await?;
            Ok::<(), HubError>(())
        })
        .method("JoinGroup", |ctx: Context, group: String| async move {
            ctx.groups().add(ctx.connection_id(), &group).await?;
            Ok::<(), HubError>(())
        })
        .method(
            "SendToGroup",
            |clients: Clients, group: String, value: Payload| async move {
                clients.group(group).send("Msg", (value,)).await?;
                Ok::<(), HubError>(())
            },
        )
        .build()
}

/// Members of each raw room: an id and the queue its writer task drains.
type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Ws>)>>>>;

/// The raw baseline. `/room/<name>` joins a room whose every frame goes to all its members
/// (the sender included, as `Clients.All` does); `/records` echoes each 0x1E-terminated record
/// however it was split into frames; any other path echoes each frame back.
async fn serve_raw(listener: TcpListener) {
    let rooms: Rooms = Arc::default();
    let ids = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let rooms = rooms.clone();
        let id = ids.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut path = String::new();
            // The error type is tungstenite's, fixed by its callback trait.
            #[allow(clippy::result_large_err)]
            let callback = |request: &Request, response: Response| {
                path = request.uri().path().to_owned();
                Ok(response)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(
                stream,
                callback,
                Some(ws_config()),
            )
            .await
            else {
                return;
            };
            match path.strip_prefix("/room/") {
                Some(room) => raw_room(ws, rooms, room.to_owned(), id).await,
                None if path == "/records" => raw_records(ws).await,
                None => raw_echo(ws).await,
            }
        });
    }
}

async fn raw_echo(mut ws: tokio_tungstenite::WebSocketStream<TcpStream>) {
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            break;
        }
    }
}

/// The least any server must do to take in text records split over WebSocket frames: each
/// frame's payload is appended to a buffer, the search for the 0x1E separator resumes where it
/// stopped, and each whole record goes back as one text frame. `attack` measures this floor.
async fn raw_records(mut ws: tokio_tungstenite::WebSocketStream<TcpStream>) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut scanned = 0;
    while let Some(Ok(message)) = ws.next().await {
        if !(message.is_text() || message.is_binary()) {
            continue;
        }
        buffer.extend_from_slice(&message.into_data());
        while let Some(at) = memchr::memchr(0x1e, &buffer[scanned..]) {
            let end = scanned + at + 1;
            let record = buffer.drain(..end).collect::<Vec<u8>>();
            scanned = 0;
            let Ok(text) = String::from_utf8(record) else {
                return;
            };
            if ws.send(Ws::text(text)).await.is_err() {
                return;
            }
        }
        scanned = buffer.len();
    }
}

async fn raw_room(
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    rooms: Rooms,
    room: String,
    id: u64,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Ws>();
    rooms
        .lock()
        .expect("rooms")
        .entry(room.clone())
        .or_default()
        .push((id, tx));
    // The writer batches whatever is queued into one flush, as a tuned server would.
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            while let Ok(next) = rx.try_recv() {
                if sink.feed(next).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if message.is_text() || message.is_binary() {
            let rooms = rooms.lock().expect("rooms");
            for (_, member) in rooms.get(&room).into_iter().flatten() {
                let _ = member.send(message.clone());
            }
        }
    }
    if let Some(members) = rooms.lock().expect("rooms").get_mut(&room) {
        members.retain(|(member, _)| *member != id);
    }
    writer.abort();
}

/// A server child process; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    /// Started under a wrapper (a profiler), which must exit cleanly to write its output.
    wrapped: bool,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.wrapped {
            // SIGTERM, so that a profiler gets to write its results, then a grace period.
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `bench/peers/setup.sh` installs the peers.
pub fn peers_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIGNALR_BENCH_PEERS") {
        return dir.into();
    }
    std::env::temp_dir().join("signalr-bench-peers")
}

/// Our own peer server scripts, in the source tree.
fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Why a peer cannot run, or `None` when its setup is present.
pub fn peer_missing(target: &str) -> Option<String> {
    let dir = peers_dir();
    let (marker, tool) = match target {
        "aiosignalr" => ("aiosignalr.ok", "python3"),
        "socket.io" => ("socketio.ok", "node"),
        _ => return None,
    };
    if !dir.join(marker).exists() {
        return Some(format!(
            "not installed (run bench/peers/setup.sh; looked in {})",
            dir.display()
        ));
    }
    if target == "socket.io" && Command::new(tool).arg("--version").output().is_err() {
        return Some("node is not on PATH".into());
    }
    None
}

/// Starts a target as a pinned child process and waits for its port.
pub async fn start(target: &str) -> Result<Server, String> {
    start_with_env(target, &[]).await
}

/// [`start`], with extra environment variables for the child.
pub async fn start_with_env(target: &str, env: &[(&str, &str)]) -> Result<Server, String> {
    // SIGNALR_BENCH_WRAP puts a command in front of our server, for profiling it, for
    // example `valgrind --tool=callgrind`.
    let wrap: Vec<String> = std::env::var("SIGNALR_BENCH_WRAP")
        .ok()
        .filter(|_| target == "ours")
        .map(|w| w.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    start_under(target, wrap, env).await
}

/// [`start_with_env`] without pinning to core 0: for runs of several server processes that
/// share the machine's cores (`scale`).
pub async fn start_spread(target: &str, env: &[(&str, &str)]) -> Result<Server, String> {
    spawn(target, Vec::new(), env, false).await
}

/// Starts a target with `wrap` (a profiler and its arguments; empty for none) in front of it.
/// Only the targets this binary serves can be wrapped.
pub async fn start_under(
    target: &str,
    wrap: Vec<String>,
    env: &[(&str, &str)],
) -> Result<Server, String> {
    let pinned = Command::new("taskset").arg("--version").output().is_ok();
    spawn(target, wrap, env, pinned).await
}

async fn spawn(
    target: &str,
    wrap: Vec<String>,
    env: &[(&str, &str)],
    pinned: bool,
) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = peers_dir();
    let (program, args): (PathBuf, Vec<String>) = match (target, wrap.split_first()) {
        ("ours" | "raw" | "socketioxide", Some((wrapper, wrapper_args))) => {
            let mut args = wrapper_args.to_vec();
            args.extend([exe.display().to_string(), "serve".into(), target.into()]);
            (wrapper.into(), args)
        }
        ("ours" | "raw" | "socketioxide", _) => (exe, vec!["serve".into(), target.into()]),
        ("aiosignalr", _) => (
            dir.join("venv/bin/python"),
            vec![scripts_dir()
                .join("aiosignalr_server.py")
                .display()
                .to_string()],
        ),
        ("socket.io", _) => (
            "node".into(),
            vec![scripts_dir()
                .join("socketio-server.mjs")
                .display()
                .to_string()],
        ),
        (other, _) => return Err(format!("unknown target {other}")),
    };
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let stderr = if std::env::var_os("SIGNALR_BENCH_SERVER_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    };
    let mut child = command
        .args(&args)
        .env("SIGNALR_BENCH_PEERS", &dir)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("{target} does not start: {e}"))?;
    let stdout = child.stdout.take().expect("stdout");
    let stdout = tokio::process::ChildStdout::from_std(stdout).map_err(|e| e.to_string())?;
    let mut server = Server {
        child,
        port: 0,
        wrapped: !wrap.is_empty(),
    };
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await;
    if !matches!(read, Ok(Ok(n)) if n > 0) {
        return Err(format!("{target} did not report its port"));
    }
    server.port = line
        .trim()
        .strip_prefix("LISTENING ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{target} printed {line:?} instead of its port"))?;
    Ok(server)
}

/// CPU time (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
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

/// Resident memory of a process in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The anonymous part of a process's RSS (KiB): its heap and stacks, without the pages of its
/// executable and other files, which the kernel can drop and read again at will.
pub fn rss_anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}
