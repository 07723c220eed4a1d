//! Bearer tokens: the token endpoint's answer (a pure parser) and a cache per
//! (upstream host, scope, user) that single-flights fetches.
//!
//! Concurrent requests for the same key wait on one fetch instead of each asking the realm; a
//! token is served until shortly before it expires; a token the upstream rejected is dropped
//! only if it is still the cached one (so N requests failing with the same stale token cause one
//! refresh, not N).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use oci::{Credentials, Secret};

/// Lifetime of a token whose answer has no `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// The longest a token is kept, whatever `expires_in` says (an answer may say anything, up to
/// `u64::MAX` seconds, past what a clock can add).
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// What identifies a token: where it is used, for what, on whose behalf.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub host: String,
    pub scope: String,
    /// The credentials the token was fetched with, password included: a token fetched with
    /// one password never answers for another (a reloaded config, two entries for one host).
    /// `None` for anonymous tokens.
    pub credentials: Option<Credentials>,
}

/// A token and when to stop using it.
#[derive(Debug, Clone)]
pub struct Token {
    pub value: Secret,
    /// Already shortened by a safety margin before the real expiry.
    pub use_until: Instant,
}

impl Token {
    /// A token valid for `lifetime` from `now`, used until shortly before it expires (a fifth of
    /// its lifetime early, at most 30 s early); at most [`MAX_LIFETIME`].
    pub fn new(value: Secret, lifetime: Duration, now: Instant) -> Token {
        let lifetime = lifetime.min(MAX_LIFETIME);
        let margin = (lifetime / 5).min(Duration::from_secs(30));
        Token {
            value,
            use_until: now + lifetime.saturating_sub(margin),
        }
    }
}

/// Parses a token endpoint's JSON answer: `token` or `access_token`, and `expires_in` seconds
/// (default [`DEFAULT_LIFETIME`]).
pub fn parse_token_response(body: &[u8]) -> Result<(Secret, Duration), String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| format!("the token endpoint answered with invalid JSON ({e})"))?;
    let token = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| "the token endpoint's answer has no `token` or `access_token`".to_owned())?;
    let lifetime = match answer.expires_in {
        Some(0) | None => DEFAULT_LIFETIME,
        Some(secs) => Duration::from_secs(secs),
    };
    Ok((Secret::new(token), lifetime))
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// The most keys (host, repository, credentials) the cache holds: repository names come from
/// clients, so without a bound a client asking for names at random would grow it forever.
pub const MAX_SLOTS: usize = 4096;

/// Cached tokens, one slot per key.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Slot>>,
}

impl TokenCache {
    fn slot(&self, key: &TokenKey) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(key) {
            return slot.clone();
        }
        if slots.len() >= MAX_SLOTS {
            // First the slots nobody is using whose token is gone or expired; if every one
            // still holds a good token, every slot nobody is using: a token is one fetch away.
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot
                        .try_lock()
                        .is_ok_and(|token| usable(token.as_ref()).is_some())
            });
            if slots.len() >= MAX_SLOTS {
                slots.retain(|_, slot| Arc::strong_count(slot) > 1);
            }
        }
        slots.entry(key.clone()).or_default().clone()
    }

    /// How many keys the cache holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The cached token for `key`, if still usable.
    #[cfg(test)]
    pub async fn cached(&self, key: &TokenKey) -> Option<Secret> {
        let slot = self.slot(key);
        let guard = slot.lock().await;
        usable(guard.as_ref())
    }

    /// The cached token for `key`, or the result of `fetch` (run by one caller at a time per key;
    /// the others wait and reuse its token).
    pub async fn get_or_fetch<F, Fut, E>(&self, key: &TokenKey, fetch: F) -> Result<Secret, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, E>>,
    {
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        if let Some(value) = usable(guard.as_ref()) {
            return Ok(value);
        }
        let token = fetch().await?;
        let value = token.value.clone();
        *guard = Some(token);
        Ok(value)
    }

    /// Forgets `rejected` if it is still the cached token for `key`.
    pub async fn invalidate(&self, key: &TokenKey, rejected: &Secret) {
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|t| &t.value == rejected) {
            *guard = None;
        }
    }
}

fn usable(token: Option<&Token>) -> Option<Secret> {
    token
        .filter(|t| Instant::now() < t.use_until)
        .map(|t| t.value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key() -> TokenKey {
        TokenKey {
            host: "r.example.com".to_owned(),
            scope: "repository:a:pull".to_owned(),
            credentials: None,
        }
    }

    #[test]
    fn token_or_access_token_and_expiry() {
        let (t, life) = parse_token_response(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.expose(), life), ("abc", Duration::from_secs(300)));
        let (t, life) = parse_token_response(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!((t.expose(), life), ("xyz", DEFAULT_LIFETIME));
        let (t, _) =
            parse_token_response(br#"{"token":"","access_token":"fallback","issued_at":"x"}"#)
                .unwrap();
        assert_eq!(t.expose(), "fallback");
        assert!(parse_token_response(br#"{"expires_in":3}"#).is_err());
        assert!(parse_token_response(b"<html>").is_err());
    }

    #[test]
    fn margin_before_expiry() {
        let now = Instant::now();
        let t = Token::new(Secret::new("a"), Duration::from_secs(300), now);
        assert_eq!(t.use_until, now + Duration::from_secs(270));
        let t = Token::new(Secret::new("a"), Duration::from_secs(10), now);
        assert_eq!(t.use_until, now + Duration::from_secs(8));
        // Found by the `challenge` fuzz target: `now + u64::MAX s` overflowed the clock.
        let (_, life) =
            parse_token_response(br#"{"token":"t","expires_in":18446744073709551615}"#).unwrap();
        let t = Token::new(Secret::new("a"), life, now);
        assert_eq!(t.use_until, now + MAX_LIFETIME - Duration::from_secs(30));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_fetch_and_expired_tokens_are_refetched() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let cache = cache.clone();
            let fetches = fetches.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(&key(), || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(Token::new(
                            Secret::new("t1"),
                            Duration::from_secs(10),
                            Instant::now(),
                        ))
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().expose(), "t1");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert!(cache.cached(&key()).await.is_some());

        // A token at the end of its (margin-shortened) lifetime is fetched again.
        let expired = TokenKey {
            scope: "repository:b:pull".to_owned(),
            ..key()
        };
        let stale = || async {
            Ok::<_, ()>(Token::new(
                Secret::new("old"),
                Duration::ZERO,
                Instant::now(),
            ))
        };
        cache.get_or_fetch(&expired, stale).await.unwrap();
        assert!(cache.cached(&expired).await.is_none());
        let t = cache
            .get_or_fetch(&expired, || async {
                Ok::<_, ()>(Token::new(
                    Secret::new("new"),
                    Duration::from_secs(60),
                    Instant::now(),
                ))
            })
            .await
            .unwrap();
        assert_eq!(t.expose(), "new");
    }

    #[tokio::test]
    async fn invalidate_only_drops_the_rejected_token() {
        let cache = TokenCache::default();
        let fresh = |v: &'static str| {
            move || async move {
                Ok::<_, ()>(Token::new(
                    Secret::new(v),
                    Duration::from_secs(60),
                    Instant::now(),
                ))
            }
        };
        cache.get_or_fetch(&key(), fresh("t1")).await.unwrap();
        cache.invalidate(&key(), &Secret::new("other")).await;
        assert_eq!(cache.cached(&key()).await.unwrap().expose(), "t1");
        cache.invalidate(&key(), &Secret::new("t1")).await;
        assert!(cache.cached(&key()).await.is_none());
        let t = cache.get_or_fetch(&key(), fresh("t2")).await.unwrap();
        assert_eq!(t.expose(), "t2");
    }

    #[tokio::test]
    async fn the_cache_holds_at_most_max_slots_keys() {
        let cache = TokenCache::default();
        let key = |i: usize| TokenKey {
            host: "registry.example".to_owned(),
            scope: format!("repository:r{i}:pull"),
            credentials: None,
        };
        let fetch = || async {
            Ok::<_, ()>(Token::new(
                Secret::new("t"),
                Duration::from_secs(300),
                Instant::now(),
            ))
        };
        for i in 0..MAX_SLOTS * 2 + 1 {
            cache.get_or_fetch(&key(i), fetch).await.unwrap();
            assert!(cache.len() <= MAX_SLOTS, "{} keys after {i}", cache.len());
        }
        // The newest token is still served from the cache.
        let newest = key(MAX_SLOTS * 2);
        assert!(cache.cached(&newest).await.is_some());
    }
}
