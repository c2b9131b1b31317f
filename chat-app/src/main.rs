//! `cargo run --release -p chat-app`: the chat service on its configured address.

use std::io::IsTerminal;

use chat_app::config::Config;
use chat_app::secrets::redact_url;

/// jemalloc, not the system allocator: see the dependency's note in Cargo.toml.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    // Logs go to stderr; stdout carries the one "listening on" line scripts read.
    // Colours only on a terminal: a log file or a collector gets plain text.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(message) = run().await {
        eprintln!("chat-app: {message}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), String> {
    let config = Config::load()?;
    match &config.jwt_secret_file {
        Some((path, true)) => tracing::warn!(
            "JWT_SECRET is not set: generated a development secret and keeps it in {} (set JWT_SECRET and APP_ENV=production for production)",
            path.display()
        ),
        Some((path, false)) => tracing::warn!(
            "JWT_SECRET is not set: using the development secret kept in {} (set JWT_SECRET and APP_ENV=production for production)",
            path.display()
        ),
        None => {}
    }
    let (app, hub) = chat_app::build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen_addr))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    // Scripts read this line to find the port (LISTEN_ADDR may say port 0).
    println!("chat-app listening on http://{address}");
    let metrics = match &config.metrics {
        chat_app::config::MetricsAccess::Open => "open at /metrics",
        chat_app::config::MetricsAccess::Token(_) => "at /metrics with METRICS_TOKEN",
        chat_app::config::MetricsAccess::Off => "off (set METRICS_TOKEN to serve /metrics)",
    };
    tracing::info!(
        database = %redact_url(&config.database_url),
        production = config.production,
        metrics,
        "chat-app started"
    );
    // signalr-core's server, not axum's: request-header and keep-alive timeouts, a
    // connection cap, body size and rate limits (ServeOptions' documented defaults), which
    // axum::serve does not have. Each request carries its peer address, which feeds the
    // per-address login and registration throttles.
    let signal = async move {
        signalr_core::shutdown_signal().await;
        hub.shutdown().await;
    };
    signalr_core::serve_service(listener, app, signalr_core::ServeOptions::default(), signal)
        .await
        .map_err(|e| e.to_string())
}
