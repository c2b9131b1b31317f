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
//! | `jwt_secret` | `JWT_SECRET` | a development-only secret | signs the service's access tokens; required in production |
//! | `app_env` | `APP_ENV` | `development` | `development` or `production` |
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
//! | `assistant_timeout_secs` | `ASSISTANT_TIMEOUT_SECS` | `60` | longest wait for the provider's next chunk |
//!
//! `RUST_LOG` sets the log filter (default `info`). A missing or invalid setting stops start-up
//! with one line saying which.

use std::net::SocketAddr;

use serde::Deserialize;

const DEV_JWT_SECRET: &str = "chat-app-development-secret-do-not-use-in-production";

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// The database (`sqlite://...` or `postgres://...`).
    pub database_url: String,
    /// The Redis backplane, when several processes serve the hub.
    pub redis: Option<Redis>,
    /// Secret for signing and checking access tokens.
    pub jwt_secret: String,
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
    pub api_key: String,
    pub base_url: String,
    pub model: String,
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
    assistant_system_prompt: Option<String>,
    assistant_history_messages: Option<i64>,
    assistant_history_chars: Option<usize>,
    assistant_concurrency: Option<usize>,
    assistant_rate_per_minute: Option<usize>,
    assistant_timeout_secs: Option<u64>,
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

impl Config {
    /// Reads the file (if any) and the environment.
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
        Self::resolve(file, |key| {
            std::env::var(key).ok().filter(|v| !v.is_empty())
        })
    }

    fn resolve(file: File, env: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let pick = |key: &str, from_file: Option<String>| env(key).or(from_file);
        let app_env = pick("APP_ENV", file.app_env).unwrap_or_else(|| "development".into());
        let production = match app_env.as_str() {
            "development" => false,
            "production" => true,
            other => {
                return Err(format!(
                    "APP_ENV must be 'development' or 'production', not '{other}'"
                ))
            }
        };
        let listen =
            pick("LISTEN_ADDR", file.listen_addr).unwrap_or_else(|| "127.0.0.1:5000".into());
        let listen_addr = listen
            .parse()
            .map_err(|_| format!("LISTEN_ADDR '{listen}' is not an address like 127.0.0.1:5000"))?;
        let database_url = pick("DATABASE_URL", file.database_url)
            .unwrap_or_else(|| "sqlite://chat.db?mode=rwc".into());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(format!(
                "DATABASE_URL must start with sqlite: or postgres://, got '{database_url}'"
            ));
        }
        let redis = match pick("REDIS_URL", file.redis_url) {
            Some(url) if !url.starts_with("redis://") => {
                return Err(format!(
                    "REDIS_URL must start with redis:// (TLS is not supported), got '{url}'"
                ))
            }
            Some(url) => Some(Redis {
                url,
                channel_prefix: pick("REDIS_CHANNEL_PREFIX", file.redis_channel_prefix)
                    .unwrap_or_else(|| "ChatApp.Hubs.ChatHub".into()),
                cluster: match env("REDIS_CLUSTER").as_deref() {
                    None => file.redis_cluster.unwrap_or(false),
                    Some("true") => true,
                    Some("false") => false,
                    Some(other) => {
                        return Err(format!(
                            "REDIS_CLUSTER must be 'true' or 'false', not '{other}'"
                        ))
                    }
                },
            }),
            None => None,
        };
        let jwt_secret = match pick("JWT_SECRET", file.jwt_secret) {
            Some(secret) if secret.len() < 16 => {
                return Err("JWT_SECRET must be at least 16 characters".into())
            }
            Some(secret) => secret,
            None if production => {
                return Err("JWT_SECRET is required when APP_ENV=production".into())
            }
            None => DEV_JWT_SECRET.into(),
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
        let openai = pick("OPENAI_API_KEY", file.openai_api_key).map(|api_key| OpenAi {
            api_key,
            base_url: pick("OPENAI_BASE_URL", file.openai_base_url.clone())
                .unwrap_or_else(|| "https://api.openai.com/v1".into()),
            model: pick("OPENAI_MODEL", file.openai_model.clone())
                .unwrap_or_else(|| "gpt-4o-mini".into()),
        });
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
        Ok(Config {
            openai,
            assistant,
            assistant_timeout,
            listen_addr,
            database_url,
            redis,
            jwt_secret,
            production,
            token_lifetime_minutes,
            max_message_chars,
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
            (&[("APP_ENV", "staging")][..], "APP_ENV must be"),
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
}
