//! Building the responses outpost sends: JSON, manifests, blobs (whole or a range), stale
//! answers, and the [`Outcome`] the access log reads. No builder here can fail: headers are
//! made from values that were validated when they were parsed (digests, media types, numbers).

use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_range_header::{EndPosition, RangeUnsatisfiableError, StartPosition};
use oci::Digest;

use crate::body::{empty, full, Body};
use crate::error::ApiError;
use crate::manifest::Manifest;

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
/// The `Warning` on answers served from the store because the upstream could not be asked.
pub const STALE_WARNING: &str = "110 outpost \"Response is Stale\"";

/// What the access log records about a request besides method, path and status; handlers put it
/// in the response extensions.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub upstream: Option<String>,
    pub cache: Option<&'static str>,
    /// The routed operation (the `operation` label of `outpost_requests_total`).
    pub operation: Option<&'static str>,
}

/// Marks the response with its cache outcome for the access log.
pub fn mark(mut response: Response<Body>, cache: &'static str) -> Response<Body> {
    response
        .extensions_mut()
        .get_or_insert_default::<Outcome>()
        .cache = Some(cache);
    response
}

/// Whether the cache passed `response` through without storing it (marked `pass-through`).
pub fn passed_through(response: &Response<Body>) -> bool {
    response
        .extensions()
        .get::<Outcome>()
        .is_some_and(|outcome| outcome.cache == Some("pass-through"))
}

/// A response with `status` and `body` (empty for HEAD), `Content-Length` set when known.
fn response(status: StatusCode, length: Option<u64>, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Some(length) = length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

fn digest_value(digest: &Digest) -> HeaderValue {
    // `<alg>:<hex>`: always a valid header value.
    owned_value(digest.to_string())
}

/// A header value made from `text` without copying it (one allocation per header on a hit
/// path where there are dozens); empty if `text` is not a valid value, which callers rule out.
fn owned_value(text: String) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).unwrap_or(HeaderValue::from_static(""))
}

/// A JSON body.
pub fn json(status: StatusCode, body: bytes::Bytes, head: bool) -> Response<Body> {
    let length = body.len() as u64;
    let mut r = response(
        status,
        Some(length),
        if head { empty() } else { full(body) },
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A manifest: its bytes, its media type as `Content-Type`, its digest and ETag.
pub fn manifest(m: &Manifest, head: bool) -> Response<Body> {
    let body = if head { empty() } else { full(m.bytes.clone()) };
    let mut r = response(StatusCode::OK, Some(m.bytes.len() as u64), body);
    let headers = r.headers_mut();
    // A `MediaType` is visible ASCII: a valid header value.
    if let Ok(value) = HeaderValue::from_str(m.media_type.as_str()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(DOCKER_CONTENT_DIGEST, digest_value(&m.digest));
    headers.insert(header::ETAG, owned_value(format!("\"{}\"", m.digest)));
    r
}

/// A referrers index (`application/vnd.oci.image.index.v1+json`), with
/// `OCI-Filters-Applied: artifactType` when `filtered`.
pub fn referrers(index: bytes::Bytes, filtered: bool, head: bool) -> Response<Body> {
    let mut r = response(
        StatusCode::OK,
        Some(index.len() as u64),
        if head { empty() } else { full(index) },
    );
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(oci::OCI_INDEX),
    );
    if filtered {
        headers.insert(
            HeaderName::from_static("oci-filters-applied"),
            HeaderValue::from_static("artifactType"),
        );
    }
    r
}

/// A stored manifest served because the upstream could not be asked.
pub fn stale(manifest: &Manifest, head: bool, error: &ApiError) -> Response<Body> {
    tracing::warn!(digest = %manifest.digest, error = %error.message, "serving a stale manifest");
    let mut r = self::manifest(manifest, head);
    r.headers_mut()
        .insert(header::WARNING, HeaderValue::from_static(STALE_WARNING));
    mark(r, "stale")
}

/// A blob, or bytes `[start, end)` of it: 206 with `Content-Range` for a range of a known size,
/// else 200 (with `Content-Length` when the size is known).
pub fn blob(
    digest: &Digest,
    range: Option<(u64, u64)>,
    size: Option<u64>,
    body: Body,
) -> Response<Body> {
    let mut r = match (range, size) {
        (Some((start, end)), Some(size)) => {
            let mut r = response(StatusCode::PARTIAL_CONTENT, Some(end - start), body);
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
                r.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            r
        }
        (_, size) => response(StatusCode::OK, size, body),
    };
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(DOCKER_CONTENT_DIGEST, digest_value(digest));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    r
}

/// A blob streamed from the upstream as it answered (200 or 206), with its length, range and
/// content type.
pub fn passed_blob(
    status: StatusCode,
    upstream: &HeaderMap,
    digest: &Digest,
    body: Body,
) -> Response<Body> {
    let mut r = response(status, None, body);
    let headers = r.headers_mut();
    headers.insert(DOCKER_CONTENT_DIGEST, digest_value(digest));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let content_type = upstream
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    for name in [header::CONTENT_LENGTH, header::CONTENT_RANGE] {
        if let Some(value) = upstream.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    r
}

/// A `Range` header resolved against a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: serve everything (no header, several ranges, another unit, a
    /// malformed range, which RFC 9110 says to ignore).
    Full,
    /// `[start, end)`
    Part(u64, u64),
    /// Nothing of the blob matches: 416.
    Unsatisfiable,
}

/// Resolves one `bytes=` range (`N-M`, `N-`, `-S`) against `size`, by RFC 9110 §14: the syntax
/// is the `http-range-header` crate's; a last position past the end is the end, a suffix longer
/// than the blob is the whole blob.
pub fn parse_range(header: Option<&HeaderValue>, size: u64) -> ByteRange {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return ByteRange::Full;
    };
    let ranges = match http_range_header::parse_range_header(value.trim()) {
        Ok(parsed) => parsed.ranges,
        Err(RangeUnsatisfiableError::ZeroSuffix) => return ByteRange::Unsatisfiable,
        Err(_) => return ByteRange::Full,
    };
    let [range] = ranges.as_slice() else {
        return ByteRange::Full; // several ranges: the whole blob
    };
    let start = match range.start {
        StartPosition::Index(start) => start,
        StartPosition::FromLast(suffix) => size.saturating_sub(suffix),
    };
    let end = match range.end {
        EndPosition::Index(last) if last < start => return ByteRange::Full,
        EndPosition::Index(last) => last.saturating_add(1).min(size),
        EndPosition::LastByte => size,
    };
    if start >= size {
        ByteRange::Unsatisfiable
    } else {
        ByteRange::Part(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str, size: u64) -> ByteRange {
        parse_range(Some(&HeaderValue::from_str(s).unwrap()), size)
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), ByteRange::Full);
        assert_eq!(range("bytes=0-4", 10), ByteRange::Part(0, 5));
        assert_eq!(range("bytes=5-", 10), ByteRange::Part(5, 10));
        assert_eq!(range("bytes=5-100", 10), ByteRange::Part(5, 10));
        assert_eq!(range("bytes=-3", 10), ByteRange::Part(7, 10));
        assert_eq!(range("bytes=-30", 10), ByteRange::Part(0, 10));
        assert_eq!(range("bytes=10-", 10), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=0-", 0), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=-0", 10), ByteRange::Unsatisfiable);
        assert_eq!(range("bytes=0-1,3-4", 10), ByteRange::Full);
        assert_eq!(range("items=0-1", 10), ByteRange::Full);
        assert_eq!(range("bytes=4-2", 10), ByteRange::Full);
        assert_eq!(range("bytes=x-2", 10), ByteRange::Full);
        assert_eq!(range(" bytes=1-2 ", 10), ByteRange::Part(1, 3));
    }

    #[test]
    fn manifest_responses_name_their_type_digest_and_length() {
        let bytes = bytes::Bytes::from_static(br#"{"schemaVersion":2}"#);
        let m = Manifest {
            digest: Digest::compute(oci::Algorithm::Sha256, &bytes),
            media_type: oci::MediaType::oci_manifest(),
            bytes: bytes.clone(),
        };
        for head in [false, true] {
            let r = manifest(&m, head);
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], oci::OCI_MANIFEST);
            assert_eq!(h[DOCKER_CONTENT_DIGEST], m.digest.to_string().as_str());
            assert_eq!(h[header::ETAG], format!("\"{}\"", m.digest).as_str());
            assert_eq!(h[header::CONTENT_LENGTH], bytes.len().to_string().as_str());
        }
    }

    #[test]
    fn blob_responses() {
        let d = Digest::compute(oci::Algorithm::Sha256, b"x");
        let r = blob(&d, Some((2, 5)), Some(10), empty());
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 2-4/10");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "3");
        assert_eq!(r.headers()[DOCKER_CONTENT_DIGEST], d.to_string().as_str());
        let r = blob(&d, None, None, empty());
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
    }
}
