//! One log line per request, written when the response body has been sent (or abandoned), with
//! method, path, upstream, status, bytes, duration and cache outcome. Never a header value, so
//! never a credential (and the path never carries one: the API is read-only and has no tokens in
//! its query strings; the query is not logged anyway).
//!
//! The same wrapper feeds [`Metrics`]: the request and its cache outcome are counted when the
//! response headers go out, the body's bytes as each frame passes (so a client that has read a
//! body sees it counted).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use prometheus_client::metrics::counter::Counter;

use crate::body::{Body, BoxError};
use crate::metrics::{Metrics, ServedFrom};
use crate::response::Outcome;

/// Wraps the response body so that its end writes the access log line; counts the request in
/// `metrics`.
pub fn wrap(
    response: Response<Body>,
    method: Method,
    path: String,
    started: Instant,
    metrics: &Metrics,
) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let outcome = parts
        .extensions
        .get::<Outcome>()
        .cloned()
        .unwrap_or_default();
    metrics.request(outcome.operation.unwrap_or("other"), parts.status);
    if let Some(cache) = outcome.cache {
        metrics.cache_outcome(cache);
    }
    let served = (parts.status.is_success() && method != Method::HEAD)
        .then(|| ServedFrom::of(outcome.cache, outcome.upstream.is_some()))
        .flatten()
        .map(|from| metrics.served_bytes(from));
    // hyper stops polling a body once it has sent `Content-Length` bytes (and never polls the
    // body of a HEAD), so reaching that length is the other way a body ends.
    let expected = if method == Method::HEAD {
        Some(0)
    } else {
        parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    let logged = LoggedBody {
        inner: body,
        served,
        line: Line {
            expected,
            method,
            path,
            status: parts.status,
            outcome,
            started,
            bytes: 0,
            complete: false,
        },
    };
    Response::from_parts(parts, logged.boxed_unsync())
}

struct Line {
    method: Method,
    path: String,
    status: StatusCode,
    outcome: Outcome,
    started: Instant,
    bytes: u64,
    /// The body's length, when the response declared it.
    expected: Option<u64>,
    complete: bool,
}

impl Drop for Line {
    fn drop(&mut self) {
        tracing::info!(
            target: "outpost::access",
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            upstream = self.outcome.upstream.as_deref().unwrap_or("-"),
            cache = self.outcome.cache.unwrap_or("-"),
            bytes = self.bytes,
            complete = self.complete || self.expected.is_some_and(|e| self.bytes >= e),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}

struct LoggedBody {
    inner: Body,
    /// Where the body's bytes are counted (successful responses only).
    served: Option<Counter>,
    line: Line,
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.line.bytes += data.len() as u64;
                    if let Some(served) = &this.served {
                        served.inc_by(data.len() as u64);
                    }
                }
                // hyper stops polling a body that says it has ended.
                this.line.complete = this.inner.is_end_stream();
            }
            Poll::Ready(None) => this.line.complete = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
