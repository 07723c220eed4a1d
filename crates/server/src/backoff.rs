//! `Retry-After`: when an upstream answers `429` (or `503`) with it, that repository on that
//! upstream is not asked again until the time has passed. Meanwhile a stored manifest is served
//! stale and anything else is answered `429` with the time left, without a request.
//!
//! The wait is capped ([`MAX_WAIT`]) so a hostile or broken upstream cannot park a repository
//! for days; an HTTP-date in the past, or an unparsable value, asks for no wait at all.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::header;
use oci::Target;
use tokio::time::Instant;

use crate::error::ApiError;

/// The longest wait honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Repositories whose upstream asked to wait, until when.
#[derive(Default)]
pub struct Backoff {
    until: Mutex<HashMap<(String, String), Instant>>,
}

impl Backoff {
    fn key(target: &Target) -> (String, String) {
        (target.host.to_ascii_lowercase(), target.repository.clone())
    }

    /// `Err` (the `429` to answer) while the upstream of `target` asked to wait.
    pub fn check(&self, target: &Target) -> Result<(), ApiError> {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let key = Backoff::key(target);
        match until.get(&key) {
            Some(&end) if end > Instant::now() => {
                Err(ApiError::backing_off(target, end - Instant::now()))
            }
            Some(_) => {
                until.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Remembers the `Retry-After` of an upstream that is unavailable (`429`, `503`).
    pub fn note(&self, target: &Target, error: &ApiError) {
        if !error.is_unavailable() || error.not_asked {
            return;
        }
        let Some(wait) = error
            .headers
            .iter()
            .find(|(name, _)| name == header::RETRY_AFTER)
            .and_then(|(_, value)| value.to_str().ok())
            .and_then(retry_after)
        else {
            return;
        };
        tracing::warn!(
            upstream = %target.host, repository = %target.repository, wait_s = wait.as_secs(),
            "the upstream asked to wait (Retry-After); serving from the store meanwhile"
        );
        self.until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(Backoff::key(target), Instant::now() + wait);
    }
}

/// A `Retry-After` value: seconds, or an HTTP-date; capped at [`MAX_WAIT`].
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .ok()?,
    };
    (!wait.is_zero()).then(|| wait.min(MAX_WAIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};

    fn target(repo: &str) -> Target {
        Target {
            host: "registry-1.docker.io".into(),
            repository: repo.into(),
            credentials: None,
            tls: Default::default(),
        }
    }

    fn limited(retry_after: &'static str) -> ApiError {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "limit");
        e.headers
            .push((header::RETRY_AFTER, HeaderValue::from_static(retry_after)));
        e
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("0"), None);
        assert_eq!(retry_after("999999"), Some(MAX_WAIT));
        assert_eq!(retry_after("soon"), None);
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            None,
            "in the past"
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(600));
        let wait = retry_after(&later).unwrap();
        assert!(wait > Duration::from_secs(590) && wait <= Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn a_repository_is_left_alone_until_the_time_has_passed() {
        let backoff = Backoff::default();
        backoff.note(&target("library/a"), &limited("120"));
        let error = backoff.check(&target("library/a")).unwrap_err();
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(error.headers[0].1, "120");
        assert!(
            backoff.check(&target("library/b")).is_ok(),
            "another repository"
        );
        tokio::time::advance(Duration::from_secs(119)).await;
        assert_eq!(
            backoff.check(&target("library/a")).unwrap_err().headers[0].1,
            "1"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(backoff.check(&target("library/a")).is_ok());
        // A 429 without Retry-After, a 404 with one, or an outage without one, asks for no wait.
        let mut plain = limited("0");
        plain.headers.clear();
        backoff.note(&target("library/a"), &plain);
        let mut not_found = limited("60");
        not_found.status = StatusCode::NOT_FOUND;
        not_found.code = "MANIFEST_UNKNOWN";
        backoff.note(&target("library/a"), &not_found);
        backoff.note(&target("library/a"), &ApiError::bad_gateway("down"));
        assert!(backoff.check(&target("library/a")).is_ok());
    }
}
