//! The one place where errors become OCI error codes and HTTP statuses.
//!
//! Every error body is the OCI form `{"errors":[{"code","message","detail"}]}`. Messages name the
//! upstream host or the offending input, never a credential. Routing errors, upstream client
//! errors, an upstream's own error answers, store errors and the failures of a blob fill all
//! become an [`ApiError`] here, and only here; so does the one decision that drives
//! stale-if-error everywhere: [`ApiError::is_unavailable`].

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use oci::{Digest, Target};
use upstream::UpstreamError;

use crate::body::{empty, full, Body};
use crate::route::RouteError;

/// The code of errors where the upstream was not reachable or failed. (Not an OCI code: the spec
/// lets registries add their own.)
pub const UNAVAILABLE: &str = "UNAVAILABLE";

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// OCI error code, e.g. `MANIFEST_UNKNOWN`.
    pub code: &'static str,
    pub message: String,
    pub detail: Option<Box<serde_json::Value>>,
    /// Headers that go with the error: `Retry-After` for 429, `Content-Range` for 416.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The configuration does not let outpost ask this upstream: what is stored is served as
    /// when it is unavailable.
    pub not_asked: bool,
}

/// What was asked of an upstream, to pick the OCI code of its 404.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    Blob,
    Tags,
    Referrers,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
            not_asked: false,
        }
    }

    /// The upstream (or the way to it) failed: `502 UNAVAILABLE`.
    pub fn bad_gateway(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, UNAVAILABLE, message)
    }

    /// The upstream could not be asked or could not answer: unreachable, timed out, TLS or
    /// protocol failure, a 5xx answer, `429 Too Many Requests` (Docker Hub's pull limit), or one
    /// the configuration does not let outpost ask (`upstream.allowedHosts`). The
    /// one test of stale-if-error: in these cases a stored manifest, the locally known tags (and,
    /// once stored, referrers) are served instead. Authentication failures and other 4xx answers
    /// are not: the upstream answered.
    pub fn is_unavailable(&self) -> bool {
        self.code == UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS || self.not_asked
    }

    /// The upstream asked to be left alone (`Retry-After`) and `remaining` is left of that: the
    /// request is answered here, without asking it.
    pub fn backing_off(target: &Target, remaining: Duration) -> ApiError {
        let seconds = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOOMANYREQUESTS",
            format!(
                "upstream {}/{} asked outpost to wait (Retry-After); it is not asked again for \
                 another {seconds} s, and nothing is stored for this request",
                target.host, target.repository
            ),
        );
        error
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from(seconds)));
        error
    }

    /// A `Range` outside a blob of `size` bytes: `416` with `Content-Range: bytes */size`.
    pub fn range_not_satisfiable(size: u64) -> ApiError {
        let mut error = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UNKNOWN",
            format!("the requested range is outside the blob's {size} bytes"),
        );
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
            error.headers.push((header::CONTENT_RANGE, value));
        }
        error
    }

    /// A blob download took longer than `cache.fillTimeout`.
    pub fn fill_timeout(digest: &Digest, host: &str, limit: Duration) -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            UNAVAILABLE,
            format!(
                "downloading {digest} from upstream {host} took longer than cache.fillTimeout \
                 ({limit:?}); nothing was stored"
            ),
        )
    }

    /// A blob download broke off (the connection, or writing the temp file). `from` names the
    /// source: `upstream <host>` or `the shared store (…)`.
    pub fn download_broken(digest: &Digest, from: &str, why: &dyn std::fmt::Display) -> ApiError {
        ApiError::bad_gateway(format!(
            "the download of {digest} from {from} broke off: {why}; nothing was stored"
        ))
    }

    /// A downloaded blob did not match its digest or size.
    pub fn blob_unverified(from: &str, why: &dyn std::fmt::Display) -> ApiError {
        ApiError::bad_gateway(format!(
            "{from} sent a blob that failed verification: {why}; nothing was stored"
        ))
    }

    /// A client named an upstream outpost may not connect to. Stored content of it is still
    /// served (see [`ApiError::is_unavailable`]).
    pub fn upstream_not_allowed(why: String) -> ApiError {
        ApiError {
            not_asked: true,
            ..ApiError::new(StatusCode::FORBIDDEN, "DENIED", why)
        }
    }

    /// A blob of unknown size outgrew the room the store may use (`cache.maxSize`,
    /// `cache.minFree`) while it was downloaded: stopped, nothing stored.
    pub fn no_room(digest: &Digest, from: &str, why: &str) -> ApiError {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "UNKNOWN",
            format!(
                "the download of {digest} from {from} was stopped: {why}; nothing was \
                 stored (raise the limit, or free space on the data dir's file system)"
            ),
        )
    }

    /// `what` (a blob, a manifest) was fetched but not kept, for want of room (`why`): for
    /// `outpost prefetch`, whose whole point is keeping it.
    pub fn not_stored(what: impl std::fmt::Display, why: &str) -> ApiError {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "UNKNOWN",
            format!(
                "{what} was not stored: {why} (raise the limit, or free space on the data dir's \
                 file system)"
            ),
        )
    }

    /// A fill's task ended without saying how (it panicked or was cancelled).
    pub fn download_vanished() -> ApiError {
        ApiError::bad_gateway("the blob download ended unexpectedly")
    }

    /// Reading an upstream's answer failed (too big, broken connection).
    pub fn unreadable(target: &Target, what: &str, why: &dyn std::fmt::Display) -> ApiError {
        ApiError::bad_gateway(format!(
            "upstream {}: reading {what} of {}: {why}",
            target.host, target.repository
        ))
    }

    /// An upstream's answer was read but is not what the API says it must be.
    pub fn invalid_answer(target: &Target, what: impl std::fmt::Display) -> ApiError {
        ApiError::bad_gateway(format!(
            "upstream {} sent {what} for {}; nothing was returned or stored",
            target.host, target.repository
        ))
    }

    /// The local registry could not read what it holds.
    pub fn store_read(what: impl std::fmt::Display, why: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("local registry: reading {what}: {why}"),
        )
    }

    /// outpost is not ready to serve (starting, or the store could not be opened).
    pub fn starting(message: impl Into<String>, retry_after: Option<u32>) -> ApiError {
        let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE, message);
        if let Some(seconds) = retry_after {
            error
                .headers
                .push((header::RETRY_AFTER, HeaderValue::from(seconds)));
        }
        error
    }

    /// An upstream's error answer: its status, headers and (at most 64 KiB of) body. Keeps the
    /// upstream's OCI message when it sent one (never its `detail`) and names the upstream.
    pub fn upstream_answer(
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        target: &Target,
        kind: Kind,
    ) -> ApiError {
        let upstream_error = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("errors")?.get(0).cloned());
        let upstream_message = upstream_error
            .as_ref()
            .and_then(|e| e.get("message")?.as_str().map(str::to_owned));
        let what = format!("{}/{}", target.host, target.repository);
        let upstream_code = upstream_error
            .as_ref()
            .and_then(|e| e.get("code")?.as_str().map(str::to_owned));
        let (status, code) = match status {
            // The repository itself is unknown: say so whatever was asked of it.
            StatusCode::NOT_FOUND if upstream_code.as_deref() == Some("NAME_UNKNOWN") => {
                (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
            }
            StatusCode::NOT_FOUND => (
                StatusCode::NOT_FOUND,
                match kind {
                    Kind::Manifest => "MANIFEST_UNKNOWN",
                    Kind::Blob => "BLOB_UNKNOWN",
                    Kind::Tags | Kind::Referrers => "NAME_UNKNOWN",
                },
            ),
            StatusCode::TOO_MANY_REQUESTS => (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => (StatusCode::FORBIDDEN, "DENIED"),
            s if s.is_client_error() => (s, "UNKNOWN"),
            _ => (StatusCode::BAD_GATEWAY, UNAVAILABLE),
        };
        let message = match upstream_message {
            Some(m) => format!("upstream {what} answered {status}: {m}"),
            None => format!("upstream {what} answered {status}"),
        };
        // The upstream's `detail` is not passed on: registries put their internals there
        // (Distribution: the storage path of the blob).
        let mut error = ApiError::new(status, code, message);
        if let Some(retry_after) = headers.get(header::RETRY_AFTER) {
            error
                .headers
                .push((header::RETRY_AFTER, retry_after.clone()));
        }
        error
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(detail) = &self.detail {
            error["detail"] = (**detail).clone();
        }
        Bytes::from(serde_json::json!({ "errors": [error] }).to_string())
    }

    pub fn into_response(self, head: bool) -> Response<Body> {
        let body = self.body();
        let length = HeaderValue::from(body.len());
        let mut response = Response::new(if head { empty() } else { full(body) });
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, length);
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        let (status, code) = match &e {
            RouteError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            RouteError::Unsupported { .. } => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            RouteError::NameInvalid(_) | RouteError::RegistryInvalid(_) => {
                (StatusCode::BAD_REQUEST, "NAME_INVALID")
            }
            RouteError::DigestInvalid(..) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            // The spec's endpoint table allows only 404 for a manifest GET/HEAD by tag, and has
            // no TAG_INVALID code: a tag that cannot exist is a manifest that is not there.
            RouteError::TagInvalid(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            RouteError::QueryInvalid(_) => (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> ApiError {
        let code = match e {
            UpstreamError::CredentialsRejected { .. }
            | UpstreamError::AuthRequired { .. }
            | UpstreamError::AnonymousTokenRefused { .. }
            | UpstreamError::UnsupportedChallenge { .. }
            | UpstreamError::TokenFetch { .. } => "DENIED",
            _ => UNAVAILABLE,
        };
        ApiError::new(e.status_hint(), code, e.to_string())
    }
}

impl From<storage::StoreError> for ApiError {
    fn from(e: storage::StoreError) -> ApiError {
        tracing::error!(error = %e, "store error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("local registry: {e}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            host: "registry.example:5000".into(),
            repository: "team/app".into(),
            credentials: None,
            tls: Default::default(),
        }
    }

    #[test]
    fn upstream_answers_keep_the_oci_message_and_name_the_upstream() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such tag","detail":{"Tag":"v9"}}]}"#;
        let e = ApiError::upstream_answer(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            body,
            &target(),
            Kind::Manifest,
        );
        assert_eq!(
            (e.status, e.code),
            (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        );
        assert!(
            e.message.contains("registry.example:5000/team/app"),
            "{}",
            e.message
        );
        assert!(e.message.contains("no such tag"), "{}", e.message);
        assert!(!e.is_unavailable());
        let body = String::from_utf8(e.body().to_vec()).unwrap();
        assert!(!body.contains("v9") && !body.contains("detail"), "{body}");
        let e = ApiError::upstream_answer(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            b"",
            &target(),
            Kind::Tags,
        );
        assert_eq!(e.code, "NAME_UNKNOWN");
    }

    #[test]
    fn only_failures_of_the_upstream_itself_are_unavailable() {
        let answer = |status: u16| {
            ApiError::upstream_answer(
                StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
                b"",
                &target(),
                Kind::Blob,
            )
        };
        for status in [500, 502, 503, 504] {
            assert!(answer(status).is_unavailable(), "{status}");
            assert_eq!(answer(status).status, StatusCode::BAD_GATEWAY);
        }
        for status in [400, 401, 403, 404] {
            assert!(!answer(status).is_unavailable(), "{status}");
        }
        // Docker Hub's pull limit: served from the store like an outage.
        assert!(answer(429).is_unavailable());
        let unreachable = ApiError::from(UpstreamError::Unreachable {
            host: "h".into(),
            detail: "refused".into(),
        });
        assert!(unreachable.is_unavailable());
        let denied = ApiError::from(UpstreamError::AuthRequired { host: "h".into() });
        assert_eq!((denied.code, denied.is_unavailable()), ("DENIED", false));
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
        let limited = ApiError::upstream_answer(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            b"",
            &target(),
            Kind::Manifest,
        );
        assert_eq!(limited.code, "TOOMANYREQUESTS");
        assert_eq!(limited.headers[0].1, "120");
    }

    #[test]
    fn responses_are_oci_error_bodies() {
        let response = ApiError::range_not_satisfiable(10).into_response(false);
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(response.headers()[header::CONTENT_RANGE], "bytes */10");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = ApiError::bad_gateway("down").body();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"errors": [{"code": "UNAVAILABLE", "message": "down"}]})
        );
    }
}
