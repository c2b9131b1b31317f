//! Configuration: `chat-app.toml` (optional; `CHAT_APP_CONFIG` names another file), overridden
//! by environment variables. Every key, its default, and what it does:
//!
//! | key (toml) | environment | default | meaning |
//! |---|---|---|---|
//! | `listen_addr` | `LISTEN_ADDR` | `127.0.0.1:5000` | where HTTP and the hub listen |
//! | `database_url` | `DATABASE_URL` | `sqlite://chat.db?mode=rwc` | SQLite file, or `postgres://...` |
//! | `redis_url` | `REDIS_URL` | unset (single process) | `redis://...`: run as one of several processes sharing this Redis (and one database) |
//! | `redis_channel_prefix` | `REDIS_CHANNEL_PREFIX` | `ChatApp.Hubs.ChatHub` | names the hub's Redis channels; processes of one service share it |
//! | `redis_cluster` | `REDIS_CLUSTER` | `false` | `true`: `REDIS_URL` is a node of a Redis Cluster; channels are sharded over its nodes |
//! | `jwt_secret` | `JWT_SECRET` | generated (development only, see below) | signs the service's access tokens, at least 32 characters; required in production |
//! | `app_env` | `APP_ENV` | `development` | `development` or `production` (`staging` counts as production) |
//! | `token_lifetime_minutes` | `TOKEN_LIFETIME_MINUTES` | `720` | how long issued access tokens last |
//! | `max_message_chars` | `MAX_MESSAGE_CHARS` | `4000` | longest chat message accepted |
//! | `openai_api_key` | `OPENAI_API_KEY` | unset (assistant off) | key for the `@gpt` assistant's provider |
//! | `openai_base_url` | `OPENAI_BASE_URL` | `https://api.openai.com/v1` | any OpenAI-compatible chat completions API |
//! | `openai_model` | `OPENAI_MODEL` | `gpt-4o-mini` | the model asked |
//! | `assistant_system_prompt` | `ASSISTANT_SYSTEM_PROMPT` | a short helpful-assistant prompt | sent first in every request |
//! | `assistant_history_messages` | `ASSISTANT_HISTORY_MESSAGES` | `20` | recent room messages sent as context |
//! | `assistant_history_chars` | `ASSISTANT_HISTORY_CHARS` | `8000` | and at most this many characters of them |
//! | `assistant_concurrency` | `ASSISTANT_CONCURRENCY` | `4` | replies generated at once, across rooms |
//! | `assistant_rate_per_minute` | `ASSISTANT_RATE_PER_MINUTE` | `6` | `@gpt` requests one user may make per minute |
//! | `openai_stream_usage` | `OPENAI_STREAM_USAGE` | `true` | ask the provider for token counts (`stream_options.include_usage`, for the token metrics); `false` for a provider that refuses that field |
//! | `assistant_timeout_secs` | `ASSISTANT_TIMEOUT_SECS` | `60` | longest wait for the provider's next chunk |
//! | `database_acquire_timeout_ms` | `DATABASE_ACQUIRE_TIMEOUT_MS` | `3000` | longest wait for a database connection; past it the request answers 503 |
//! | `database_connect_attempts` | `DATABASE_CONNECT_ATTEMPTS` | `5` | tries to reach the database at start-up (1 s apart, doubling up to 8 s) before giving up |
//! | `stateful_reconnect` | `STATEFUL_RECONNECT` | `true` | offer stateful reconnect: a client that reconnects within the disconnect timeout misses nothing |
//! | `disconnect_timeout_secs` | `DISCONNECT_TIMEOUT_SECS` | `15` | how long a dropped connection waits for its client to come back |
//! | `password_hash_concurrency` | `PASSWORD_HASH_CONCURRENCY` | CPU cores − 1 (at least 1) | password hashes computed at once; 64 more may wait, then 503 |
//! | `send_message_rate` | `SEND_MESSAGE_RATE` | `30/10` | `SendMessage` and `SendDirectMessage` calls per user (together), and `EditMessage` and `DeleteMessage` calls (together, apart from sending): COUNT/SECONDS |
//! | `typing_rate` | `TYPING_RATE` | `10/10` | `Typing` calls per user |
//! | `join_rate` | `JOIN_RATE` | `30/60` | `JoinRoom` and `LeaveRoom` calls per user |
//! | `login_rate_per_address` | `LOGIN_RATE_PER_ADDRESS` | `30/60` | login attempts per client address |
//! | `login_rate_per_name` | `LOGIN_RATE_PER_NAME` | `10/300` | login attempts per user name (guessing one account's password) |
//! | `register_rate_per_address` | `REGISTER_RATE_PER_ADDRESS` | `20/600` | registrations per client address |
//! | `metrics_token` | `METRICS_TOKEN` | unset | `GET /metrics` (Prometheus) then needs `Authorization: Bearer TOKEN`; at least 16 characters |
//!
//! `/metrics` is served on the app's own address. With `METRICS_TOKEN` set it takes that bearer
//! token, in any environment. Without one it is open in development (which listens on loopback
//! by default) and off in production: it answers 404 and nothing is recorded, so a service on
//! a public address never shows its figures to anyone who asks.
//!
//! Rate limits and throttles are counted in Redis when `REDIS_URL` is set (shared by every
//! process), else in the process. `RUST_LOG` sets the log filter (default `info`). A missing or
//! invalid setting stops start-up with one line saying which; secrets never appear in it.
//!
//! Without `JWT_SECRET`, a development instance generates a random secret and keeps it in a file
//! beside its SQLite database (`chat.db.jwt-secret`; `chat-app.jwt-secret` in the working
//! directory for PostgreSQL), so restarts keep sessions; production refuses to start without one.
//!
//! For services moving from ASP.NET Core and EarthChat: `ASPNETCORE_ENVIRONMENT`
//! (`Development`, `Staging`, `Production`) stands in for `APP_ENV`; `CONNECTION_STRING` with
//! `SQLTYPE` (`sqlite` or `postgresql`) for `DATABASE_URL` (a URL, or a .NET connection string
//! such as `Host=db;Database=chat;Username=chat;Password=...` or `Data Source=chat.db`);
//! `REDIS_CONNECTION_STRING` (`host:port,password=...`) for `REDIS_URL`. Each applies only when
//! the setting it stands in for is unset. `AZURE_SIGNALR_CONNECTION` stops start-up: this
//! service serves its hub itself and does not use Azure SignalR Service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::limits::Rate;
use crate::secrets::redact_url;

/// A secret value: shown as `***` by `Debug`, so printing a configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// The database (`sqlite://...` or `postgres://...`).
    pub database_url: String,
    /// The Redis backplane, when several processes serve the hub.
    pub redis: Option<Redis>,
    /// Secret for signing and checking access tokens. `None` after [`Config::resolve`] in
    /// development without `JWT_SECRET`; [`Config::load`] then fills in the generated one.
    pub jwt_secret: Option<Secret>,
    /// Where the generated development secret is kept, and whether this start created it.
    pub jwt_secret_file: Option<(PathBuf, bool)>,
    /// Whether this is production (stricter checks).
    pub production: bool,
    /// Lifetime of issued access tokens, in minutes.
    pub token_lifetime_minutes: i64,
    /// Longest chat message, in characters.
    pub max_message_chars: usize,
    /// The assistant's provider, when a key is configured.
    pub openai: Option<OpenAi>,
    /// The assistant's limits and prompt.
    pub assistant: crate::assistant::Limits,
    /// Longest wait for the provider's next chunk.
    pub assistant_timeout: std::time::Duration,
    /// Longest wait for a database connection.
    pub database_acquire_timeout: Duration,
    /// Tries to reach the database at start-up.
    pub database_connect_attempts: u32,
    /// Offer stateful reconnect to clients.
    pub stateful_reconnect: bool,
    /// How long a dropped connection waits for its client.
    pub disconnect_timeout: Duration,
    /// Password hashes computed at once.
    pub password_hash_concurrency: usize,
    /// Rate limits and throttles.
    pub rates: Rates,
    /// Who may read `/metrics`.
    pub metrics: MetricsAccess,
}

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Anyone who reaches the address (development without a token).
    Open,
    /// Requests with `Authorization: Bearer` this token.
    Token(Secret),
    /// Nobody: 404, and no recorder is installed (production without a token).
    Off,
}

/// Per-user rate limits and per-address/per-name throttles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub send_message: Rate,
    pub typing: Rate,
    pub join: Rate,
    pub login_per_address: Rate,
    pub login_per_name: Rate,
    pub register_per_address: Rate,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            send_message: Rate::new(30, 10),
            typing: Rate::new(10, 10),
            join: Rate::new(30, 60),
            login_per_address: Rate::new(30, 60),
            login_per_name: Rate::new(10, 300),
            register_per_address: Rate::new(20, 600),
        }
    }
}

/// The Redis backplane's settings.
#[derive(Debug, Clone)]
pub struct Redis {
    pub url: String,
    pub channel_prefix: String,
    /// A Redis Cluster (sharded channels) rather than one endpoint.
    pub cluster: bool,
}

/// An OpenAI-compatible provider.
#[derive(Debug, Clone)]
pub struct OpenAi {
    pub api_key: Secret,
    pub base_url: String,
    pub model: String,
    /// Ask for the token usage chunk at the end of each streamed reply.
    pub stream_usage: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen_addr: Option<String>,
    database_url: Option<String>,
    redis_url: Option<String>,
    redis_channel_prefix: Option<String>,
    redis_cluster: Option<bool>,
    jwt_secret: Option<String>,
    app_env: Option<String>,
    token_lifetime_minutes: Option<i64>,
    max_message_chars: Option<usize>,
    openai_api_key: Option<String>,
    openai_base_url: Option<String>,
    openai_model: Option<String>,
    openai_stream_usage: Option<bool>,
    assistant_system_prompt: Option<String>,
    assistant_history_messages: Option<i64>,
    assistant_history_chars: Option<usize>,
    assistant_concurrency: Option<usize>,
    assistant_rate_per_minute: Option<usize>,
    assistant_timeout_secs: Option<u64>,
    database_acquire_timeout_ms: Option<u64>,
    database_connect_attempts: Option<u32>,
    stateful_reconnect: Option<bool>,
    disconnect_timeout_secs: Option<u64>,
    password_hash_concurrency: Option<usize>,
    send_message_rate: Option<String>,
    typing_rate: Option<String>,
    join_rate: Option<String>,
    login_rate_per_address: Option<String>,
    login_rate_per_name: Option<String>,
    register_rate_per_address: Option<String>,
    metrics_token: Option<String>,
}

/// A number from the environment (which wins) or the file.
fn number<T: std::str::FromStr>(
    env: &impl Fn(&str) -> Option<String>,
    key: &str,
    from_file: Option<T>,
    default: T,
) -> Result<T, String> {
    match env(key) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("{key} must be a whole number, not '{v}'")),
        None => Ok(from_file.unwrap_or(default)),
    }
}

/// `true`/`false` from the environment (which wins) or the file.
fn flag(
    env: &impl Fn(&str) -> Option<String>,
    key: &str,
    from_file: Option<bool>,
    default: bool,
) -> Result<bool, String> {
    match env(key).as_deref() {
        None => Ok(from_file.unwrap_or(default)),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!("{key} must be 'true' or 'false', not '{other}'")),
    }
}

/// A rate (`COUNT/SECONDS`) from the environment (which wins) or the file.
fn rate(
    env: &impl Fn(&str) -> Option<String>,
    key: &str,
    from_file: Option<String>,
    default: Rate,
) -> Result<Rate, String> {
    match env(key).or(from_file) {
        Some(v) => Rate::parse(&v).ok_or_else(|| {
            format!("{key} must be COUNT/SECONDS, such as 30/10 (30 per 10 seconds), not '{v}'")
        }),
        None => Ok(default),
    }
}

/// Percent-encodes a URL user name or password.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `Key=Value;...` pairs of a .NET connection string, keys lower-cased without spaces.
fn dotnet_pairs(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase().replace(' ', ""),
                v.trim().to_owned(),
            )
        })
        .collect()
}

/// EarthChat's `CONNECTION_STRING` (+ `SQLTYPE`) as a database URL.
fn database_url_from_connection_string(
    text: &str,
    sql_type: Option<&str>,
) -> Result<String, String> {
    if text.starts_with("sqlite:") || text.starts_with("postgres") {
        return Ok(text.to_owned());
    }
    let pairs = dotnet_pairs(text);
    let get = |keys: &[&str]| {
        pairs
            .iter()
            .find(|(k, _)| keys.contains(&k.as_str()))
            .map(|(_, v)| v.clone())
    };
    match sql_type.map(str::to_ascii_lowercase).as_deref() {
        Some("sqlite") => {
            let path = get(&["datasource", "filename", "data_source"])
                .ok_or("CONNECTION_STRING for SQLite needs 'Data Source=FILE'")?;
            Ok(format!("sqlite://{path}?mode=rwc"))
        }
        Some("postgresql" | "postgres" | "pgsql" | "npgsql") => {
            let host = get(&["host", "server"])
                .ok_or("CONNECTION_STRING for PostgreSQL needs 'Host=...'")?;
            let port = get(&["port"]).unwrap_or_else(|| "5432".into());
            let database = get(&["database", "db"]).unwrap_or_else(|| "postgres".into());
            let user = get(&["username", "userid", "user", "uid"]).unwrap_or_default();
            let credentials = match (user.is_empty(), get(&["password", "pwd"])) {
                (true, _) => String::new(),
                (false, Some(password)) => {
                    format!("{}:{}@", url_encode(&user), url_encode(&password))
                }
                (false, None) => format!("{}@", url_encode(&user)),
            };
            Ok(format!(
                "postgres://{credentials}{host}:{port}/{}",
                url_encode(&database)
            ))
        }
        Some(other) => Err(format!(
            "SQLTYPE '{other}' is not supported: chat-app runs on sqlite or postgresql"
        )),
        None => Err(
            "CONNECTION_STRING is not a sqlite: or postgres:// URL; set SQLTYPE (sqlite or postgresql) to read it as a .NET connection string"
                .into(),
        ),
    }
}

/// EarthChat's `REDIS_CONNECTION_STRING` (StackExchange.Redis form `host:port,password=...`)
/// as a Redis URL.
fn redis_url_from_connection_string(text: &str) -> Result<String, String> {
    if text.starts_with("redis://") || text.starts_with("rediss://") {
        return Ok(text.to_owned());
    }
    let mut parts = text.split(',').map(str::trim);
    let endpoint = parts.next().filter(|e| !e.is_empty()).ok_or(
        "REDIS_CONNECTION_STRING must start with host:port (such as redis:6379,password=...)",
    )?;
    let endpoint = if endpoint.contains(':') {
        endpoint.to_owned()
    } else {
        format!("{endpoint}:6379")
    };
    let (mut user, mut password, mut database) = (None, None, None);
    for option in parts {
        let Some((key, value)) = option.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "password" => password = Some(value.trim().to_owned()),
            "user" => user = Some(value.trim().to_owned()),
            "defaultdatabase" => database = Some(value.trim().to_owned()),
            "ssl" if value.trim().eq_ignore_ascii_case("true") => {
                return Err(
                    "REDIS_CONNECTION_STRING asks for ssl=true; TLS to Redis is not supported"
                        .into(),
                )
            }
            // Client tuning (abortConnect, connectTimeout, ...) has no counterpart here.
            _ => {}
        }
    }
    let credentials = match (user, password) {
        (None, None) => String::new(),
        (user, password) => format!(
            "{}:{}@",
            url_encode(&user.unwrap_or_default()),
            url_encode(&password.unwrap_or_default())
        ),
    };
    let database = database.map(|d| format!("/{d}")).unwrap_or_default();
    Ok(format!("redis://{credentials}{endpoint}{database}"))
}

impl Config {
    /// Reads the file (if any) and the environment; in development without `JWT_SECRET`,
    /// loads or generates the kept secret.
    pub fn load() -> Result<Config, String> {
        let path = std::env::var("CHAT_APP_CONFIG").ok();
        let file = match &path {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {path}: {e}"))?,
            ),
            None => std::fs::read_to_string("chat-app.toml").ok(),
        };
        let file: File = match file {
            Some(text) => toml::from_str(&text)
                .map_err(|e| format!("invalid chat-app.toml: {}", e.message()))?,
            None => File::default(),
        };
        let mut config = Self::resolve(file, |key| {
            std::env::var(key).ok().filter(|v| !v.is_empty())
        })?;
        if config.jwt_secret.is_none() {
            let path = crate::secrets::development_secret_path(&config.database_url);
            let (secret, created) = crate::secrets::load_or_create_secret(&path)?;
            config.jwt_secret = Some(Secret::new(secret));
            config.jwt_secret_file = Some((path, created));
        }
        Ok(config)
    }

    fn resolve(file: File, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let pick = |key: &str, from_file: Option<String>| env(key).or(from_file);
        if env("AZURE_SIGNALR_CONNECTION").is_some()
            || env("Azure__SignalR__ConnectionString").is_some()
        {
            return Err("AZURE_SIGNALR_CONNECTION is set, but Azure SignalR Service is not supported: chat-app serves its hub itself (unset it; REDIS_URL runs several processes as one service)".into());
        }
        let (env_key, app_env) = match pick("APP_ENV", file.app_env) {
            Some(value) => ("APP_ENV", value),
            None => match env("ASPNETCORE_ENVIRONMENT") {
                Some(value) => ("ASPNETCORE_ENVIRONMENT", value),
                None => ("APP_ENV", "development".to_owned()),
            },
        };
        let production = match app_env.to_ascii_lowercase().as_str() {
            "development" => false,
            "production" | "staging" => true,
            _ => {
                return Err(format!(
                    "{env_key} must be 'development' or 'production' ('staging' counts as production), not '{app_env}'"
                ))
            }
        };
        let listen =
            pick("LISTEN_ADDR", file.listen_addr).unwrap_or_else(|| "127.0.0.1:5000".into());
        let listen_addr = listen
            .parse()
            .map_err(|_| format!("LISTEN_ADDR '{listen}' is not an address like 127.0.0.1:5000"))?;
        let database_url = match pick("DATABASE_URL", file.database_url) {
            Some(url) => url,
            None => match env("CONNECTION_STRING") {
                Some(text) => {
                    database_url_from_connection_string(&text, env("SQLTYPE").as_deref())?
                }
                None => "sqlite://chat.db?mode=rwc".into(),
            },
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(format!(
                "DATABASE_URL must start with sqlite: or postgres://, got '{}'",
                redact_url(&database_url)
            ));
        }
        let redis_url = match pick("REDIS_URL", file.redis_url) {
            Some(url) => Some(url),
            None => env("REDIS_CONNECTION_STRING")
                .map(|text| redis_url_from_connection_string(&text))
                .transpose()?,
        };
        let redis = match redis_url {
            Some(url) if !url.starts_with("redis://") => {
                return Err(format!(
                    "REDIS_URL must start with redis:// (TLS is not supported), got '{}'",
                    redact_url(&url)
                ))
            }
            Some(url) => Some(Redis {
                url,
                channel_prefix: pick("REDIS_CHANNEL_PREFIX", file.redis_channel_prefix)
                    .unwrap_or_else(|| "ChatApp.Hubs.ChatHub".into()),
                cluster: flag(&env, "REDIS_CLUSTER", file.redis_cluster, false)?,
            }),
            None => None,
        };
        let jwt_secret = match pick("JWT_SECRET", file.jwt_secret) {
            Some(secret) if secret.len() < 32 => {
                return Err("JWT_SECRET must be at least 32 characters".into())
            }
            Some(secret) => Some(Secret::new(secret)),
            None if production => {
                return Err(format!(
                    "JWT_SECRET is required in production ({env_key}={app_env}); generate one with: openssl rand -hex 32"
                ))
            }
            None => None,
        };
        let token_lifetime_minutes = match env("TOKEN_LIFETIME_MINUTES") {
            Some(v) => v
                .parse()
                .map_err(|_| format!("TOKEN_LIFETIME_MINUTES must be a whole number, not '{v}'"))?,
            None => file.token_lifetime_minutes.unwrap_or(720),
        };
        let max_message_chars = match env("MAX_MESSAGE_CHARS") {
            Some(v) => v
                .parse()
                .map_err(|_| format!("MAX_MESSAGE_CHARS must be a whole number, not '{v}'"))?,
            None => file.max_message_chars.unwrap_or(4000),
        };
        let stream_usage = flag(&env, "OPENAI_STREAM_USAGE", file.openai_stream_usage, true)?;
        let openai = pick("OPENAI_API_KEY", file.openai_api_key).map(|api_key| OpenAi {
            api_key: Secret::new(api_key),
            base_url: pick("OPENAI_BASE_URL", file.openai_base_url.clone())
                .unwrap_or_else(|| "https://api.openai.com/v1".into()),
            model: pick("OPENAI_MODEL", file.openai_model.clone())
                .unwrap_or_else(|| "gpt-4o-mini".into()),
            stream_usage,
        });
        let metrics = match pick("METRICS_TOKEN", file.metrics_token) {
            Some(token) if token.len() < 16 => {
                return Err("METRICS_TOKEN must be at least 16 characters".into())
            }
            Some(token) => MetricsAccess::Token(Secret::new(token)),
            None if production => MetricsAccess::Off,
            None => MetricsAccess::Open,
        };
        let assistant = crate::assistant::Limits {
            concurrency: number(&env, "ASSISTANT_CONCURRENCY", file.assistant_concurrency, 4)?,
            per_user_per_minute: number(
                &env,
                "ASSISTANT_RATE_PER_MINUTE",
                file.assistant_rate_per_minute,
                6,
            )?,
            history_messages: number(
                &env,
                "ASSISTANT_HISTORY_MESSAGES",
                file.assistant_history_messages,
                20,
            )?,
            history_chars: number(
                &env,
                "ASSISTANT_HISTORY_CHARS",
                file.assistant_history_chars,
                8000,
            )?,
            system_prompt: pick("ASSISTANT_SYSTEM_PROMPT", file.assistant_system_prompt)
                .unwrap_or_else(|| {
                    "You are gpt, a helpful assistant in a group chat. Answer briefly.".into()
                }),
        };
        let assistant_timeout = std::time::Duration::from_secs(number(
            &env,
            "ASSISTANT_TIMEOUT_SECS",
            file.assistant_timeout_secs,
            60,
        )?);
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let defaults = Rates::default();
        let rates = Rates {
            send_message: rate(
                &env,
                "SEND_MESSAGE_RATE",
                file.send_message_rate,
                defaults.send_message,
            )?,
            typing: rate(&env, "TYPING_RATE", file.typing_rate, defaults.typing)?,
            join: rate(&env, "JOIN_RATE", file.join_rate, defaults.join)?,
            login_per_address: rate(
                &env,
                "LOGIN_RATE_PER_ADDRESS",
                file.login_rate_per_address,
                defaults.login_per_address,
            )?,
            login_per_name: rate(
                &env,
                "LOGIN_RATE_PER_NAME",
                file.login_rate_per_name,
                defaults.login_per_name,
            )?,
            register_per_address: rate(
                &env,
                "REGISTER_RATE_PER_ADDRESS",
                file.register_rate_per_address,
                defaults.register_per_address,
            )?,
        };
        Ok(Config {
            openai,
            assistant,
            assistant_timeout,
            listen_addr,
            database_url,
            redis,
            jwt_secret,
            jwt_secret_file: None,
            production,
            token_lifetime_minutes,
            max_message_chars,
            database_acquire_timeout: Duration::from_millis(
                number(
                    &env,
                    "DATABASE_ACQUIRE_TIMEOUT_MS",
                    file.database_acquire_timeout_ms,
                    3000,
                )?
                .max(1),
            ),
            database_connect_attempts: number(
                &env,
                "DATABASE_CONNECT_ATTEMPTS",
                file.database_connect_attempts,
                5,
            )?
            .max(1),
            stateful_reconnect: flag(&env, "STATEFUL_RECONNECT", file.stateful_reconnect, true)?,
            disconnect_timeout: Duration::from_secs(number(
                &env,
                "DISCONNECT_TIMEOUT_SECS",
                file.disconnect_timeout_secs,
                15,
            )?),
            password_hash_concurrency: number(
                &env,
                "PASSWORD_HASH_CONCURRENCY",
                file.password_hash_concurrency,
                cores.saturating_sub(1).max(1),
            )?
            .max(1),
            rates,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_run_with_embedded_storage() {
        let config = Config::resolve(File::default(), env(&[])).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:5000");
        assert_eq!(config.database_url, "sqlite://chat.db?mode=rwc");
        assert!(
            config.redis.is_none(),
            "a single process unless REDIS_URL is set"
        );
        assert!(!config.production);
    }

    #[test]
    fn redis_url_turns_on_the_backplane() {
        let config = Config::resolve(
            File::default(),
            env(&[("REDIS_URL", "redis://127.0.0.1:6379")]),
        )
        .unwrap();
        let redis = config.redis.unwrap();
        assert_eq!(redis.url, "redis://127.0.0.1:6379");
        assert_eq!(redis.channel_prefix, "ChatApp.Hubs.ChatHub");
        assert!(!redis.cluster);
        let clustered = Config::resolve(
            File::default(),
            env(&[
                ("REDIS_URL", "redis://10.0.0.1:7000"),
                ("REDIS_CLUSTER", "true"),
            ]),
        )
        .unwrap();
        assert!(clustered.redis.unwrap().cluster);
    }

    #[test]
    fn environment_overrides_the_file_and_bad_values_are_one_line_errors() {
        let file: File =
            toml::from_str("listen_addr = \"127.0.0.1:7000\"\nmax_message_chars = 10").unwrap();
        let config = Config::resolve(file, env(&[("LISTEN_ADDR", "127.0.0.1:8000")])).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(config.max_message_chars, 10);
        for (pairs, expected) in [
            (&[("APP_ENV", "production")][..], "JWT_SECRET is required"),
            (&[("APP_ENV", "testing")][..], "APP_ENV must be"),
            (&[("LISTEN_ADDR", "nowhere")][..], "LISTEN_ADDR 'nowhere'"),
            (
                &[("DATABASE_URL", "mysql://x")][..],
                "DATABASE_URL must start",
            ),
            (
                &[("REDIS_URL", "rediss://127.0.0.1")][..],
                "REDIS_URL must start with redis://",
            ),
            (
                &[("MAX_MESSAGE_CHARS", "lots")][..],
                "MAX_MESSAGE_CHARS must be",
            ),
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(pairs.to_vec().into_boxed_slice());
            let error = Config::resolve(File::default(), env(pairs)).unwrap_err();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains('\n'));
        }
        assert!(toml::from_str::<File>("unknown_key = 1").is_err());
    }

    #[test]
    fn there_is_no_built_in_secret_and_production_refuses_without_one() {
        let config = Config::resolve(File::default(), env(&[])).unwrap();
        assert!(
            config.jwt_secret.is_none(),
            "load() generates one; none is built in"
        );
        for pairs in [
            &[("APP_ENV", "production")][..],
            &[("ASPNETCORE_ENVIRONMENT", "Production")][..],
            &[("ASPNETCORE_ENVIRONMENT", "Staging")][..],
            &[("APP_ENV", "Production")][..],
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(pairs.to_vec().into_boxed_slice());
            let error = Config::resolve(File::default(), env(pairs)).unwrap_err();
            assert!(error.contains("JWT_SECRET is required"), "{error}");
        }
        let short = Config::resolve(File::default(), env(&[("JWT_SECRET", "0123456789abcdef")]));
        assert!(short.unwrap_err().contains("at least 32"));
        let config = Config::resolve(
            File::default(),
            env(&[
                ("ASPNETCORE_ENVIRONMENT", "Production"),
                ("JWT_SECRET", "a-production-secret-of-32-chars!!"),
                ("OPENAI_API_KEY", "sk-secret-key"),
            ]),
        )
        .unwrap();
        assert!(config.production);
        // Printing the configuration shows no secret.
        let printed = format!("{config:?}");
        assert!(!printed.contains("a-production-secret") && !printed.contains("sk-secret"));
        // APP_ENV wins over the ASP.NET Core name.
        let config = Config::resolve(
            File::default(),
            env(&[
                ("APP_ENV", "development"),
                ("ASPNETCORE_ENVIRONMENT", "Production"),
            ]),
        )
        .unwrap();
        assert!(!config.production);
        let error = Config::resolve(File::default(), env(&[("ASPNETCORE_ENVIRONMENT", "Test")]))
            .unwrap_err();
        assert!(
            error.starts_with("ASPNETCORE_ENVIRONMENT must be"),
            "{error}"
        );
    }

    #[test]
    fn earthchat_and_azure_settings() {
        let pg = Config::resolve(
            File::default(),
            env(&[
                ("SQLTYPE", "PostgreSQL"),
                (
                    "CONNECTION_STRING",
                    "Host=db;Port=5433;Database=chat;Username=chat;Password=p@ss;word",
                ),
            ]),
        );
        // A ';' inside a password ends it in .NET too: what follows is another (ignored) pair.
        assert_eq!(
            pg.unwrap().database_url,
            "postgres://chat:p%40ss@db:5433/chat"
        );
        let sqlite = Config::resolve(
            File::default(),
            env(&[
                ("SQLTYPE", "sqlite"),
                ("CONNECTION_STRING", "Data Source=earth.db"),
            ]),
        );
        assert_eq!(sqlite.unwrap().database_url, "sqlite://earth.db?mode=rwc");
        let url = Config::resolve(
            File::default(),
            env(&[
                ("CONNECTION_STRING", "postgres://u@h/d"),
                ("DATABASE_URL", "sqlite://x.db"),
            ]),
        );
        assert_eq!(
            url.unwrap().database_url,
            "sqlite://x.db",
            "DATABASE_URL wins"
        );
        for (pairs, expected) in [
            (
                &[("SQLTYPE", "sqlserver"), ("CONNECTION_STRING", "Server=x")][..],
                "SQLTYPE 'sqlserver' is not supported",
            ),
            (&[("CONNECTION_STRING", "Server=x")][..], "set SQLTYPE"),
            (
                &[("REDIS_CONNECTION_STRING", "redis:6379,ssl=true")][..],
                "TLS to Redis is not supported",
            ),
            (
                &[("AZURE_SIGNALR_CONNECTION", "Endpoint=https://x;AccessKey=k")][..],
                "Azure SignalR Service is not supported",
            ),
            (
                &[("DATABASE_URL", "mysql://root:hunter22@db/chat")][..],
                "mysql://root:***@db/chat",
            ),
            (
                &[("SEND_MESSAGE_RATE", "fast")][..],
                "SEND_MESSAGE_RATE must be COUNT/SECONDS",
            ),
            (
                &[("STATEFUL_RECONNECT", "yes")][..],
                "STATEFUL_RECONNECT must be",
            ),
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(pairs.to_vec().into_boxed_slice());
            let error = Config::resolve(File::default(), env(pairs)).unwrap_err();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("hunter22") && !error.contains("AccessKey=k"));
        }
        let redis = Config::resolve(
            File::default(),
            env(&[(
                "REDIS_CONNECTION_STRING",
                "cache:6380,password=s/cret,defaultDatabase=2,abortConnect=false",
            )]),
        );
        assert_eq!(
            redis.unwrap().redis.unwrap().url,
            "redis://:s%2Fcret@cache:6380/2"
        );
        let redis = Config::resolve(
            File::default(),
            env(&[("REDIS_CONNECTION_STRING", "cache")]),
        );
        assert_eq!(redis.unwrap().redis.unwrap().url, "redis://cache:6379");
    }

    #[test]
    fn safety_settings_have_defaults_and_overrides() {
        let config = Config::resolve(File::default(), env(&[])).unwrap();
        assert!(config.stateful_reconnect, "on by default");
        assert_eq!(config.database_acquire_timeout, Duration::from_secs(3));
        assert_eq!(config.database_connect_attempts, 5);
        assert_eq!(config.rates, Rates::default());
        assert!(config.password_hash_concurrency >= 1);
        let file: File =
            toml::from_str("typing_rate = \"2/5\"\nstateful_reconnect = false").unwrap();
        let config = Config::resolve(
            file,
            env(&[
                ("SEND_MESSAGE_RATE", "3/1"),
                ("DATABASE_ACQUIRE_TIMEOUT_MS", "250"),
            ]),
        )
        .unwrap();
        assert_eq!(config.rates.send_message, Rate::new(3, 1));
        assert_eq!(config.rates.typing, Rate::new(2, 5));
        assert!(!config.stateful_reconnect);
        assert_eq!(config.database_acquire_timeout, Duration::from_millis(250));
    }

    #[test]
    fn metrics_are_open_in_development_off_in_production_unless_a_token_is_set() {
        let config = Config::resolve(File::default(), env(&[])).unwrap();
        assert_eq!(config.metrics, MetricsAccess::Open);
        const SECRET: (&str, &str) = ("JWT_SECRET", "a-production-secret-of-32-chars!!");
        let config =
            Config::resolve(File::default(), env(&[("APP_ENV", "production"), SECRET])).unwrap();
        assert_eq!(config.metrics, MetricsAccess::Off);
        for pairs in [
            &[("METRICS_TOKEN", "scrape-token-0123456789")][..],
            &[
                ("APP_ENV", "production"),
                SECRET,
                ("METRICS_TOKEN", "scrape-token-0123456789"),
            ][..],
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(pairs.to_vec().into_boxed_slice());
            let config = Config::resolve(File::default(), env(pairs)).unwrap();
            assert_eq!(
                config.metrics,
                MetricsAccess::Token(Secret::new("scrape-token-0123456789"))
            );
            assert!(!format!("{config:?}").contains("scrape-token"));
        }
        let short = Config::resolve(File::default(), env(&[("METRICS_TOKEN", "short")]));
        assert!(short
            .unwrap_err()
            .contains("METRICS_TOKEN must be at least 16"));
        let file: File = toml::from_str("openai_stream_usage = false").unwrap();
        let config = Config::resolve(file, env(&[("OPENAI_API_KEY", "sk-x")])).unwrap();
        assert!(!config.openai.unwrap().stream_usage);
        let config = Config::resolve(File::default(), env(&[("OPENAI_API_KEY", "sk-x")])).unwrap();
        assert!(config.openai.unwrap().stream_usage, "on by default");
    }
}
