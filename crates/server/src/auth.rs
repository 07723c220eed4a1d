//! Who may pull: Basic authentication against an htpasswd file (`outpost.auth.htpasswd`, bcrypt
//! entries as `htpasswd -B` writes them). Mutual TLS is the other way in; the TLS handshake
//! checks it before a request exists (see `serve.rs`).
//!
//! - A verified user and password are remembered for [`REMEMBER`] (by a SHA-256 of both, never
//!   the password itself), so a pull does not pay one bcrypt per request.
//! - Failed attempts are counted per client address: past [`FAILURES`] within [`WINDOW`], that
//!   address is answered `429` without a bcrypt, so wrong passwords cannot burn the CPU.
//! - An unknown user costs a bcrypt all the same, so timing does not tell users apart.
//! - bcrypt runs on the blocking pool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use oci::{Algorithm, Digest};
use tokio::time::Instant;

use crate::error::ApiError;

/// How long a verified user and password are remembered.
pub const REMEMBER: Duration = Duration::from_secs(300);
/// Failed attempts one address may make within [`WINDOW`].
pub const FAILURES: usize = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Remembered credentials at most (the cache is emptied beyond).
const REMEMBERED_MAX: usize = 4096;

/// Why an htpasswd file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read the htpasswd file {} (outpost.auth.htpasswd): {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {problem} (outpost.auth.htpasswd); write entries with `htpasswd -B FILE USER`", path.display())]
    Entry {
        path: PathBuf,
        line: usize,
        problem: &'static str,
    },
    #[error("{} (outpost.auth.htpasswd) has no user: add one with `htpasswd -B {} USER`", path.display(), path.display())]
    Empty { path: PathBuf },
}

/// Users and their bcrypt hashes.
pub struct Htpasswd {
    users: HashMap<String, String>,
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.to_owned(),
            source,
        })?;
        let entry = |line: usize, problem| HtpasswdError::Entry {
            path: path.to_owned(),
            line,
            problem,
        };
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| entry(i + 1, "not `user:hash`"))?;
            if user.is_empty() {
                return Err(entry(i + 1, "an empty user name"));
            }
            if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
                return Err(entry(
                    i + 1,
                    "not a bcrypt hash; only bcrypt entries are accepted",
                ));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        if users.is_empty() {
            return Err(HtpasswdError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Htpasswd { users })
    }

    /// How many users the file has.
    pub fn users(&self) -> usize {
        self.users.len()
    }
}

/// Checks the Basic credentials of requests against an htpasswd file.
pub struct Authenticator {
    htpasswd: Arc<Htpasswd>,
    /// A bcrypt hash at the users' cost, checked for unknown users so they take as long.
    decoy: String,
    remembered: Mutex<HashMap<Digest, Instant>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl Authenticator {
    pub fn new(htpasswd: Htpasswd) -> Authenticator {
        let cost = htpasswd
            .users
            .values()
            .find_map(|hash| hash.get(4..6)?.parse::<u32>().ok())
            .unwrap_or(bcrypt::DEFAULT_COST);
        let decoy = bcrypt::hash("outpost: no such user", cost).unwrap_or_default();
        Authenticator {
            decoy,
            htpasswd: Arc::new(htpasswd),
            remembered: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` when the request's `Authorization` names a user of the file with the right
    /// password; else the `401` (or, after too many failures from `client`, the `429`).
    pub async fn check(&self, headers: &HeaderMap, client: IpAddr) -> Result<(), ApiError> {
        let Some((user, password)) = basic_credentials(headers) else {
            return Err(unauthorized("authentication required"));
        };
        let key = Digest::compute(Algorithm::Sha256, format!("{user}\0{password}").as_bytes());
        let now = Instant::now();
        {
            let remembered = self
                .remembered
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if remembered.get(&key).is_some_and(|until| *until > now) {
                return Ok(());
            }
        }
        if let Some(wait) = self.blocked(client, now) {
            return Err(too_many(wait));
        }
        let hash = self.htpasswd.users.get(&user).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.clone());
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if verified && known {
            let mut remembered = self
                .remembered
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if remembered.len() >= REMEMBERED_MAX {
                remembered.clear();
            }
            remembered.insert(key, now + REMEMBER);
            return Ok(());
        }
        self.failed(client, now);
        tracing::warn!(%client, user = %user, "rejected client credentials");
        Err(unauthorized("the user name or password is wrong"))
    }

    /// How long `client` must wait, when it failed too often lately.
    fn blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = failures.get_mut(&client)?;
        recent.retain(|at| now.duration_since(*at) < WINDOW);
        if recent.len() < FAILURES {
            return None;
        }
        let oldest = recent.iter().min().copied()?;
        Some(WINDOW.saturating_sub(now.duration_since(oldest)))
    }

    fn failed(&self, client: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= REMEMBERED_MAX {
            failures.retain(|_, at| at.iter().any(|t| now.duration_since(*t) < WINDOW));
        }
        failures.entry(client).or_default().push(now);
    }
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn unauthorized(message: &str) -> ApiError {
    let mut error = ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    error.headers.push((
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"outpost\""),
    ));
    error
}

fn too_many(wait: Duration) -> ApiError {
    let seconds = wait.as_secs().max(1);
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOOMANYREQUESTS",
        format!("too many failed logins from this address; try again in {seconds} s"),
    );
    error
        .headers
        .push((header::RETRY_AFTER, HeaderValue::from(seconds)));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        headers
    }

    #[test]
    fn only_bcrypt_entries_are_read() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let (_dir, path) = file(&format!("# users\nedge:{hash}\n\n"));
        assert_eq!(Htpasswd::load(&path).unwrap().users(), 1);
        for (text, problem) in [
            ("edge:$apr1$abc$def\n", "not a bcrypt hash"),
            ("edge:{SHA}abc=\n", "not a bcrypt hash"),
            ("edge\n", "not `user:hash`"),
            ("# nobody\n", "has no user"),
        ] {
            let (_dir, path) = file(text);
            let error = Htpasswd::load(&path).err().unwrap().to_string();
            assert!(error.contains(problem), "{text}: {error}");
            assert!(error.contains("htpasswd"), "{error}");
        }
    }

    #[tokio::test]
    async fn the_right_password_the_wrong_one_and_too_many_wrong_ones() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let (_dir, path) = file(&format!("edge:{hash}\n"));
        let auth = Authenticator::new(Htpasswd::load(&path).unwrap());
        let me: IpAddr = "127.0.0.1".parse().unwrap();
        let attacker: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(auth.check(&basic("edge", "s3cret"), me).await.is_ok());
        assert!(
            auth.check(&basic("edge", "s3cret"), me).await.is_ok(),
            "remembered"
        );
        let missing = auth.check(&HeaderMap::new(), me).await.unwrap_err();
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers[0].1, "Basic realm=\"outpost\"");
        for _ in 0..FAILURES {
            let wrong = auth.check(&basic("edge", "guess"), attacker).await;
            assert_eq!(wrong.unwrap_err().status, StatusCode::UNAUTHORIZED);
        }
        let unknown = auth.check(&basic("root", "x"), me).await.unwrap_err();
        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
        // The attacker is now turned away without a bcrypt.
        let blocked = auth
            .check(&basic("edge", "guess"), attacker)
            .await
            .unwrap_err();
        assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
        // Others are not.
        assert!(auth.check(&basic("edge", "s3cret"), me).await.is_ok());
    }
}
