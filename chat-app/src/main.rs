//! `cargo run --release -p chat-app`: the chat service on its configured address.

use chat_app::config::Config;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
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
    let (app, hub) = chat_app::build(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen_addr))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    // Scripts read this line to find the port (LISTEN_ADDR may say port 0).
    println!("chat-app listening on http://{address}");
    tracing::info!(database = %config.database_url, "chat-app started");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            signalr_core::shutdown_signal().await;
            hub.shutdown().await;
        })
        .await
        .map_err(|e| e.to_string())
}
