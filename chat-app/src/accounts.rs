//! Account rules: user names (any script, unique regardless of case and Unicode form, reserved
//! names kept for the service), password bounds, and password hashing off the async runtime
//! with bounded concurrency.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use tokio::sync::Semaphore;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Longest password accepted, in bytes: hashing cost must not grow with what a client sends.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Names nobody may register, compared after folding (so `GPT`, `g.p.t`, `ＧＰＴ` and `gрt`
/// with a Cyrillic `р` are all `gpt`): the assistant's and the ones users would take for staff.
const RESERVED: &[&str] = &[
    crate::ASSISTANT_NAME,
    "assistant",
    "admin",
    "administrator",
    "system",
    "root",
    "moderator",
    "support",
    "chatapp",
];

/// A valid user name: how it is shown, and the key that makes it unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName {
    /// NFC, as the user typed it otherwise.
    pub display: String,
    /// NFKC and lower case: `Alice`, `ALICE` and `ａｌｉｃｅ` share one.
    pub key: String,
}

/// The uniqueness key of a name (also for looking up a login).
pub fn name_key(name: &str) -> String {
    let lowered: String = name.nfkc().flat_map(char::to_lowercase).collect();
    lowered.nfkc().collect()
}

/// Latin look-alikes from other scripts, for comparing against reserved names only.
fn latin_look_alike(c: char) -> char {
    match c {
        'а' | 'α' => 'a',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ε' => 'e',
        'ɡ' => 'g',
        'һ' => 'h',
        'і' | 'ι' | 'ı' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'м' => 'm',
        'п' | 'η' => 'n',
        'о' | 'ο' | '0' => 'o',
        'р' | 'ρ' => 'p',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' | 'ս' => 'u',
        'ν' | 'ѵ' => 'v',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        other => other,
    }
}

fn is_reserved(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| !"_.-".contains(*c) && !is_combining_mark(*c))
        .map(latin_look_alike)
        .collect();
    RESERVED.contains(&folded.as_str())
}

/// Checks a name for registration: 3 to 32 letters (of any script) or digits, with `_`, `.`
/// and `-` between them, not a reserved name.
pub fn check_user_name(name: &str) -> Result<UserName, &'static str> {
    const RULE: &str =
        "userName must be 3 to 32 letters or digits (any script), with '_', '.' or '-' between them.";
    let display: String = name.nfc().collect();
    let count = display.chars().count();
    if !(3..=32).contains(&count) {
        return Err(RULE);
    }
    let mut chars = display.chars();
    let first_ok = chars.next().is_some_and(char::is_alphanumeric);
    let rest_ok = chars.all(|c| c.is_alphanumeric() || is_combining_mark(c) || "_.-".contains(c));
    if !first_ok || !rest_ok {
        return Err(RULE);
    }
    let key = name_key(&display);
    if is_reserved(&key) {
        return Err("That userName is reserved.");
    }
    Ok(UserName { display, key })
}

/// Checks a new password: 8 characters at least, not only spaces, at most 1,024 bytes.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes."
        ));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters."
        ));
    }
    if password.chars().all(char::is_whitespace) {
        return Err("password cannot be only spaces.".to_owned());
    }
    Ok(())
}

/// Why a hash could not be computed.
#[derive(Debug, PartialEq, Eq)]
pub enum HashError {
    /// Too many hashes are waiting already; the client should retry shortly.
    Busy,
    Failed,
}

/// Password hashing on blocking threads, a few at a time: argon2 takes tens to hundreds of
/// milliseconds of CPU, which on the async runtime would stall every connection it serves.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    concurrency: usize,
    /// Hashes running or waiting for a turn.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// Verified against when the user does not exist, so that the answer takes as long.
    dummy_hash: Arc<String>,
}

fn hash_now(password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| HashError::Failed)
}

fn verify_now(password: &[u8], hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
        .unwrap_or(false)
}

impl Hasher {
    /// `concurrency` hashes at once; at most `max_waiting` more wait for a turn.
    pub async fn new(concurrency: usize, max_waiting: usize) -> Result<Hasher, HashError> {
        let dummy = tokio::task::spawn_blocking(|| hash_now(b"no user has this password"))
            .await
            .map_err(|_| HashError::Failed)??;
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
            waiting: Arc::default(),
            max_waiting,
            dummy_hash: Arc::new(dummy),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting + self.concurrency {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(HashError::Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        let result = match permit {
            Ok(permit) => tokio::task::spawn_blocking(move || {
                let _permit = permit;
                work()
            })
            .await
            .map_err(|_| HashError::Failed),
            Err(_) => Err(HashError::Failed),
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        result
    }

    /// A new salted argon2 hash of `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_now(password.as_bytes())).await?
    }

    /// Whether `password` matches `hash`; without a hash (unknown user) it does the same work
    /// against a dummy hash and answers `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let matches = self
            .run(move || verify_now(password.as_bytes(), &hash))
            .await?;
        Ok(known && matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_any_script_are_unique_regardless_of_case_and_form() {
        for name in [
            "alice",
            "Ålesund",
            "Ковальчук",
            "王小明",
            "José_M",
            "d.o-e",
            "हिन्दी",
        ] {
            assert!(check_user_name(name).is_ok(), "{name}");
        }
        assert_eq!(name_key("ALICE"), name_key("alice"));
        assert_eq!(name_key("ａｌｉｃｅ"), "alice", "full-width folds");
        // é precomposed and e + combining accent are one name.
        assert_eq!(
            check_user_name("Jos\u{e9}").unwrap().key,
            check_user_name("Jose\u{301}").unwrap().key
        );
        for bad in [
            "ab",
            "a b c",
            "_alice",
            "al\u{0}ice",
            "al\nice",
            "bob@x",
            "emoji😀x",
            &"x".repeat(33),
        ] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reserved_names_cannot_be_imitated() {
        for name in [
            "gpt",
            "GPT",
            "Gpt",
            "g.p.t",
            "g_p-t",
            "ＧＰＴ",
            "gрt",
            "ɡpt",
            "Admin",
            "SYSTEM",
            "assistant",
        ] {
            assert_eq!(
                check_user_name(name),
                Err("That userName is reserved."),
                "{name}"
            );
        }
        assert!(check_user_name("gpt_fan").is_ok());
    }

    #[test]
    fn password_bounds() {
        assert!(check_password("long enough").is_ok());
        assert!(check_password("пароль12").is_ok());
        assert!(check_password("short").is_err());
        assert!(check_password("        ").is_err(), "eight spaces");
        assert!(check_password(&"x".repeat(1024)).is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
        assert!(
            check_password(&"é".repeat(600)).is_err(),
            "bytes, not characters"
        );
    }

    #[tokio::test]
    async fn hashing_verifies_and_unknown_users_cost_the_same() {
        let hasher = Hasher::new(2, 8).await.unwrap();
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(hasher
            .verify("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!hasher.verify("wrong".into(), Some(hash)).await.unwrap());
        // The dummy hash's own password does not log anyone in.
        assert!(!hasher
            .verify("no user has this password".into(), None)
            .await
            .unwrap());
        let time = |hash: Option<String>| {
            let hasher = hasher.clone();
            async move {
                let started = std::time::Instant::now();
                hasher.verify("guess".into(), hash).await.unwrap();
                started.elapsed()
            }
        };
        let real = hasher.hash("something".into()).await.unwrap();
        // The fastest of three alternating runs each: other tests' load weighs on both alike.
        let (mut known, mut unknown) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..3 {
            known = known.min(time(Some(real.clone())).await);
            unknown = unknown.min(time(None).await);
        }
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        assert!(
            (0.33..3.0).contains(&ratio),
            "known {known:?}, unknown {unknown:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hashing_runs_off_the_runtime_and_refuses_past_its_queue() {
        let hasher = Hasher::new(1, 2).await.unwrap();
        let hashes: Vec<_> = (0..3)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(format!("password {i}")).await })
            })
            .collect();
        // On a single-threaded runtime, a timer still fires on time while three hashes run:
        // they are not on this thread.
        tokio::task::yield_now().await;
        let started = std::time::Instant::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
        // One running and two waiting: the next is refused at once.
        assert_eq!(hasher.hash("one more".into()).await, Err(HashError::Busy));
        for hash in hashes {
            assert!(hash.await.unwrap().is_ok());
        }
        assert!(hasher.hash("after the queue drained".into()).await.is_ok());
    }
}
