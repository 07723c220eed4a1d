//! The one place where errors become OCI error codes and HTTP statuses.
//!
//! Every error body is the OCI form `{"errors":[{"code","message","detail"}]}`. Messages name the
//! upstream host or the offending input, never a credential.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use crate::api::Body;
use crate::route::RouteError;
use crate::upstream::UpstreamError;

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
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(Box::new(detail));
        self
    }

    pub fn bad_gateway(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, UNAVAILABLE, message)
    }

    /// The upstream could not be reached, timed out or failed (5xx): the cases where a stored
    /// answer is served instead (stale-if-error).
    pub fn is_unavailable(&self) -> bool {
        self.code == UNAVAILABLE
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
        let mut response = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len());
        for (name, value) in self.headers {
            response = response.header(name, value);
        }
        let body = if head {
            crate::api::empty()
        } else {
            crate::api::full(body)
        };
        response.body(body).expect("valid error response")
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
            RouteError::TagInvalid(_) => (StatusCode::BAD_REQUEST, "TAG_INVALID"),
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
            | UpstreamError::UnsupportedChallenge { .. }
            | UpstreamError::TokenFetch { .. } => "DENIED",
            _ => "UNAVAILABLE",
        };
        ApiError::new(e.status_hint(), code, e.to_string())
    }
}

/// The upstream cannot be reached at all (down, timed out, offline): the case where outpost
/// serves what it has stored instead.
pub fn upstream_unavailable(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Unreachable { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::Tls { .. }
    )
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
