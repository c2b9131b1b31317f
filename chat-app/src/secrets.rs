//! Secrets: redacting them from URLs and messages before anything is logged or shown, and the
//! development signing secret generated on first start (there is no built-in one: a secret in
//! the source is a secret everybody has).

use std::io::Write;
use std::path::{Path, PathBuf};

/// `scheme://user:password@host/...` with the password (and any `password=` query value)
/// replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _))
                    if ["password", "pass", "pwd"].contains(&key.to_ascii_lowercase().as_str()) =>
                {
                    format!("{key}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

/// Replaces every occurrence of each secret in `message` (error texts of libraries may quote
/// what they were given).
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "***");
    }
    out
}

/// The password part of a URL, if any (to scrub it from messages).
pub fn url_password(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then(|| password.to_owned())
}

/// Where a development instance keeps its generated secret: beside its SQLite database, so a
/// restart keeps sessions; for PostgreSQL (or an in-memory SQLite), in the working directory.
pub fn development_secret_path(database_url: &str) -> PathBuf {
    let file = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|path| !path.is_empty() && !path.starts_with(':'));
    match file {
        Some(path) => PathBuf::from(format!("{path}.jwt-secret")),
        None => PathBuf::from("chat-app.jwt-secret"),
    }
}

fn read_secret(path: &Path) -> Result<Option<String>, String> {
    let shown = path.display();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let secret = text.trim().to_owned();
            if secret.len() < 32 {
                return Err(format!(
                    "the development secret file {shown} is too short; delete it to generate a new one"
                ));
            }
            Ok(Some(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read the development secret file {shown}: {e}"
        )),
    }
}

/// Reads the secret kept at `path`, or generates one there (readable by its owner only).
/// Returns the secret and whether it was just created. Two processes starting at once agree
/// on one secret: it is written aside, then linked into place only if nothing is there yet.
pub fn load_or_create_secret(path: &Path) -> Result<(String, bool), String> {
    if let Some(secret) = read_secret(path)? {
        return Ok((secret, false));
    }
    let shown = path.display();
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let aside = PathBuf::from(format!("{}.{}.new", path.display(), std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&aside)
        .and_then(|mut file| file.write_all(format!("{secret}\n").as_bytes()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&aside);
        return Err(format!(
            "cannot create the development secret file {shown}: {e}"
        ));
    }
    let linked = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok((secret, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_secret(path)?
            .map(|secret| (secret, false))
            .ok_or_else(|| format!("the development secret file {shown} vanished")),
        Err(e) => Err(format!(
            "cannot create the development secret file {shown}: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://chat:s3cr3t@db.example:5432/chat"),
            "postgres://chat:***@db.example:5432/chat"
        );
        assert_eq!(
            redact_url("postgres://db/chat?user=chat&password=s3cr3t&sslmode=require"),
            "postgres://db/chat?user=chat&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:p%40ss@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("postgres://user@db/chat"),
            "postgres://user@db/chat"
        );
        assert_eq!(
            redact_url("sqlite://chat.db?mode=rwc"),
            "sqlite://chat.db?mode=rwc"
        );
        assert_eq!(
            url_password("postgres://chat:s3cr3t@db/chat").as_deref(),
            Some("s3cr3t")
        );
        assert_eq!(url_password("postgres://chat@db/chat"), None);
        assert_eq!(
            scrub("failed for s3cr3t at db", &["s3cr3t", ""]),
            "failed for *** at db"
        );
    }

    #[test]
    fn the_development_secret_lives_beside_the_database_and_survives_restarts() {
        assert_eq!(
            development_secret_path("sqlite://chat.db?mode=rwc"),
            PathBuf::from("chat.db.jwt-secret")
        );
        assert_eq!(
            development_secret_path("sqlite:///var/lib/chat/x.db"),
            PathBuf::from("/var/lib/chat/x.db.jwt-secret")
        );
        assert_eq!(
            development_secret_path("sqlite::memory:"),
            PathBuf::from("chat-app.jwt-secret")
        );
        assert_eq!(
            development_secret_path("postgres://db/chat"),
            PathBuf::from("chat-app.jwt-secret")
        );
        let dir = std::env::temp_dir().join(format!("chat-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chat.db.jwt-secret");
        let _ = std::fs::remove_file(&path);
        let (first, created) = load_or_create_secret(&path).unwrap();
        assert!(created);
        assert_eq!(first.len(), 64);
        let (again, created) = load_or_create_secret(&path).unwrap();
        assert!(!created);
        assert_eq!(again, first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "only its owner reads it");
        }
        let other = dir.join("other.db.jwt-secret");
        let _ = std::fs::remove_file(&other);
        assert_ne!(load_or_create_secret(&other).unwrap().0, first, "random");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
