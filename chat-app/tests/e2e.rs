//! End to end: the real `chat-app` binary driven by the official JS client
//! (`conformance-tests/node/chat/chat-app.test.mjs`), once on SQLite and once on PostgreSQL.
//!
//! PostgreSQL comes from `DATABASE_URL` when it names one, else the local server
//! (`postgres://postgres@127.0.0.1:5432/postgres`); each run creates and drops its own database.
//! Missing Node or PostgreSQL is a warning locally and a failure under CI.

use std::path::Path;
use std::process::Command;

use sqlx::{Connection, Executor};

#[path = "../../conformance-tests/tests/common/npm.rs"]
mod npm;

fn missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("the chat-app end-to-end suite needs {what}: refusing to skip under CI");
    }
    eprintln!("\n!!!!!!!!!! WARNING: the chat-app end-to-end suite needs {what}; SKIPPED (this would fail under CI) !!!!!!!!!!\n");
}

fn node_ready(suite: &Path) -> bool {
    let available = ["node", "npm"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if !available {
        missing("node and npm");
        return false;
    }
    npm::ensure_installed(suite);
    true
}

/// Runs the suites (features, then safety and faults); `false` when skipped (no Node,
/// outside CI).
fn run_suite(database_url: &str, workdir: &Path) -> bool {
    run_file("chat/chat-app.test.mjs", database_url, workdir, &[])
        && run_file("chat/safety.test.mjs", database_url, workdir, &[])
}

/// Runs one Node test file of the chat suites; `false` when skipped.
fn run_file(file: &str, database_url: &str, workdir: &Path, env: &[(&str, &str)]) -> bool {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance-tests/node");
    if !node_ready(&suite) {
        return false;
    }
    let status = Command::new("node")
        .args(["--test", "--test-reporter=spec", file])
        .current_dir(&suite)
        .env("CHAT_APP_BIN", env!("CARGO_BIN_EXE_chat-app"))
        .env("CHAT_DATABASE_URL", database_url)
        .env("CHAT_WORKDIR", workdir)
        .envs(env.iter().copied())
        .status()
        .expect("node runs");
    assert!(
        status.success(),
        "{file} failed on {database_url} (see above)"
    );
    true
}

/// With no DATABASE_URL at all, as `cargo run --release -p chat-app` runs for a new user: the
/// service creates `chat.db` in its working directory, and history survives a restart there.
#[test]
fn end_to_end_on_the_default_sqlite_file() {
    let workdir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chat-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir).unwrap();
    if run_suite("default", &workdir) {
        assert!(
            workdir.join("chat.db").exists(),
            "the default database file was not created"
        );
    }
    let _ = std::fs::remove_dir_all(&workdir);
}

/// The `@gpt` assistant against a fake provider the test starts (SQLite).
#[test]
fn assistant_end_to_end() {
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = workdir.join(format!("chat-assistant-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&file);
    run_file(
        "chat/assistant.test.mjs",
        &format!("sqlite://{}?mode=rwc", file.display()),
        workdir,
        &[],
    );
    let _ = std::fs::remove_file(&file);
}

/// `/metrics` and the request log over every transport (SQLite): connection, duration,
/// invocation, HTTP, database pool and assistant metrics as scraped, no query string or access
/// token in the metrics or the log, and who may read `/metrics`.
#[test]
fn metrics_and_request_logs() {
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = workdir.join(format!("chat-metrics-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&file);
    run_file(
        "chat/metrics.test.mjs",
        &format!("sqlite://{}?mode=rwc", file.display()),
        workdir,
        &[],
    );
    let _ = std::fs::remove_file(&file);
}

/// Creates a throwaway PostgreSQL database, runs `suite` on its URL, and drops it; `None`
/// when PostgreSQL is missing (outside CI).
async fn with_postgres(suite: impl FnOnce(String) + Send + 'static) -> Option<()> {
    sqlx::any::install_default_drivers();
    let admin_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut admin = match sqlx::AnyConnection::connect(&admin_url).await {
        Ok(connection) => connection,
        Err(e) => {
            missing(&format!("PostgreSQL at {admin_url} ({e})"));
            return None;
        }
    };
    let name = format!(
        "chat_e2e_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create the test database");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("a database URL ends with /name");
    let url = format!("{base}/{name}");
    let outcome = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| suite(url)))
    })
    .await
    .expect("the suite task ran");
    let _ = admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    Some(())
}

#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_on_postgres() {
    let workdir = std::env::temp_dir();
    with_postgres(move |url| {
        if run_suite(&url, &workdir) {
            run_file("chat/faults.test.mjs", &url, &workdir, &[]);
        }
    })
    .await;
}

/// Direct messages, edits and deletes, read markers and the web UI's files, on SQLite.
#[test]
fn messaging_on_sqlite() {
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = workdir.join(format!("chat-messaging-{}.db", std::process::id()));
    let _ = std::fs::remove_file(&file);
    run_file(
        "chat/messaging.test.mjs",
        &format!("sqlite://{}?mode=rwc", file.display()),
        workdir,
        &[],
    );
    let _ = std::fs::remove_file(&file);
}

/// The same on PostgreSQL (concurrent first direct messages race for real there).
#[tokio::test(flavor = "multi_thread")]
async fn messaging_on_postgres() {
    let workdir = std::env::temp_dir();
    with_postgres(move |url| {
        run_file("chat/messaging.test.mjs", &url, &workdir, &[]);
    })
    .await;
}

/// Two chat-app processes on one PostgreSQL database and one Redis act as one service.
#[tokio::test(flavor = "multi_thread")]
async fn two_processes_on_one_redis() {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let address = redis_url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    if let Err(e) = tokio::net::TcpStream::connect(&address).await {
        return missing(&format!("Redis at {redis_url} ({e})"));
    }
    let workdir = std::env::temp_dir();
    with_postgres(move |url| {
        run_file(
            "chat/scaleout.test.mjs",
            &url,
            &workdir,
            &[("CHAT_REDIS_URL", &redis_url)],
        );
    })
    .await;
}
