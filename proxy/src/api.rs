//! The OCI Distribution read API: one handler per operation, tying routing, translation, the
//! cache and the upstream client together.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use storage::{Digest, Hasher};

use crate::cache::Cache;
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::route::{self, Operation, Reference, Registry, Route, Source};
use crate::translate::{translate, Target};
use crate::upstream::{self, Upstream};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response outpost sends.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// Manifest media types outpost asks for when the client accepts anything.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest outpost accepts (the distribution spec's recommended limit is 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Everything a request handler needs; shared by all connections.
pub struct App {
    pub config: Arc<Config>,
    pub default_registry: Registry,
    pub upstream: Upstream,
    /// The local registry; `None` when `outpost.localRegistry.enabled` is false.
    pub cache: Option<Cache>,
    /// The process's metrics (see [`crate::metrics`]).
    pub metrics: Arc<Metrics>,
}

/// What the access log records about a request besides method, path and status; handlers put it
/// in the response extensions.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub upstream: Option<String>,
    pub cache: Option<&'static str>,
    /// The routed operation (the `operation` label of `outpost_requests_total`).
    pub operation: Option<&'static str>,
}

/// Answers one request. Never fails: errors become OCI error responses.
pub async fn handle(app: Arc<App>, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    let routed = route::route(
        request.method(),
        request.uri().path(),
        request.uri().query(),
        &app.default_registry,
    );
    let mut response = match routed {
        Ok(route) => {
            // Translated once here; the handlers and the access log share it.
            let target = route
                .operation
                .source()
                .map(|source| translate(&app.config, source));
            let dispatched = dispatch(&app, &route, target.as_ref(), request.headers()).await;
            let mut response = match dispatched {
                Ok(response) => response,
                Err(error) => error.into_response(head),
            };
            let outcome = response.extensions_mut().get_or_insert_default::<Outcome>();
            outcome.operation = Some(crate::metrics::operation_name(&route.operation));
            outcome.upstream = target.map(|target| target.host);
            response
        }
        Err(error) => ApiError::from(error).into_response(head),
    };
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    response
}

/// Answers a routed request; `target` is the translation of the operation's source, if it has one.
async fn dispatch(
    app: &App,
    route: &Route,
    target: Option<&Target>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let (source, target) = match (route.operation.source(), target) {
        (Some(source), Some(target)) => (source, target),
        _ => return Ok(repository_free(app, route)),
    };
    match &route.operation {
        Operation::Manifest { reference, .. } => {
            manifest(app, source, target, reference, headers, route.head).await
        }
        Operation::Blob { digest, .. } => {
            blob(app, source, target, digest, headers, route.head).await
        }
        Operation::Tags { n, last, .. } => {
            tags(app, route, source, target, *n, last.as_deref()).await
        }
        Operation::Referrers {
            digest,
            artifact_type,
            ..
        } => referrers(app, target, digest, artifact_type.as_deref(), route.head).await,
        Operation::Base | Operation::Catalog { .. } => Ok(repository_free(app, route)),
    }
}

/// The operations on no repository: the version check and the catalog.
fn repository_free(app: &App, route: &Route) -> Response<Body> {
    match &route.operation {
        Operation::Catalog { n, last } => {
            let repositories = app
                .cache
                .as_ref()
                .map(Cache::repositories)
                .unwrap_or_default();
            catalog(repositories, *n, last.as_deref(), route.head)
        }
        _ => json_response(StatusCode::OK, Bytes::from_static(b"{}"), route.head),
    }
}

/// `_catalog`: one page of the sorted repository names after `last`, with a `Link` to the next.
fn catalog(
    mut repositories: Vec<String>,
    n: Option<u32>,
    last: Option<&str>,
    head: bool,
) -> Response<Body> {
    if let Some(last) = last {
        repositories.retain(|r| r.as_str() > last);
    }
    let mut link = None;
    if let Some(n) = n.map(|n| n as usize) {
        if repositories.len() > n {
            repositories.truncate(n);
            if let Some(next) = repositories.last() {
                link = Some(format!(
                    "</v2/_catalog?n={n}&last={}>; rel=\"next\"",
                    route::percent_encode(next)
                ));
            }
        }
    }
    let body = serde_json::json!({ "repositories": repositories }).to_string();
    let mut response = json_response(StatusCode::OK, body.into(), head);
    if let Some(value) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

fn json_response(status: StatusCode, body: Bytes, head: bool) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(if head { empty() } else { full(body) })
        .expect("valid response")
}

/// The `Accept` header sent upstream for a manifest: the client's, or every manifest type outpost
/// knows when the client sent none or only `*/*`.
pub fn manifest_accept(client: &HeaderMap) -> HeaderValue {
    let values: Vec<&str> = client
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let only_wildcards = values
        .iter()
        .all(|v| v.split(';').next().is_some_and(|t| t.trim() == "*/*"));
    if only_wildcards {
        HeaderValue::from_static(MANIFEST_TYPES)
    } else {
        HeaderValue::from_str(&values.join(", "))
            .unwrap_or_else(|_| HeaderValue::from_static(MANIFEST_TYPES))
    }
}

/// A manifest fetched and checked: its bytes, media type and digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

impl Manifest {
    pub fn response(&self, head: bool) -> Response<Body> {
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, &self.media_type)
            .header(header::CONTENT_LENGTH, self.bytes.len())
            .header(DOCKER_CONTENT_DIGEST, self.digest.to_string())
            .header(header::ETAG, format!("\"{}\"", self.digest))
            .body(if head {
                empty()
            } else {
                full(self.bytes.clone())
            })
            .expect("valid response")
    }
}

async fn manifest(
    app: &App,
    source: &Source,
    target: &Target,
    reference: &Reference,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let accept = manifest_accept(headers);
    if let Some(cache) = &app.cache {
        return cache
            .manifest(app, source, target, reference, accept, head)
            .await;
    }
    fetch_manifest(app, target, reference, accept)
        .await
        .map(|m| m.response(head))
}

/// GETs a manifest from the target and checks it: by digest, the bytes must match it; by tag,
/// the digest is the upstream's `Docker-Content-Digest` if the bytes match it, or else computed.
pub async fn fetch_manifest(
    app: &App,
    target: &Target,
    reference: &Reference,
    accept: HeaderValue,
) -> Result<Manifest, ApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, accept);
    let response = app
        .upstream
        .send(
            target,
            upstream::Request {
                method: Method::GET,
                path: format!("manifests/{reference}"),
                query: None,
                headers,
            },
        )
        .await?;
    if !response.status().is_success() {
        return Err(upstream_failure(response, target, Kind::Manifest).await);
    }
    let media_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let claimed = response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let bytes = read_limited(response.into_body(), MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| {
            ApiError::bad_gateway(format!(
                "upstream {}: reading the manifest of {}: {e}",
                target.host, target.repository
            ))
        })?;
    let expected = match reference {
        Reference::Digest(d) => Some(d.clone()),
        Reference::Tag(_) => claimed,
    };
    let digest = match expected {
        Some(expected) => {
            let actual = Digest::compute(expected.algorithm(), &bytes);
            if actual != expected {
                return Err(ApiError::bad_gateway(format!(
                    "upstream {} sent a manifest for {}:{} whose digest is {actual}, not {expected}; \
                     nothing was returned or stored",
                    target.host, target.repository, reference
                )));
            }
            actual
        }
        None => Digest::compute(storage::Algorithm::Sha256, &bytes),
    };
    let media_type = media_type
        .or_else(|| media_type_of(&bytes))
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned());
    Ok(Manifest {
        bytes,
        media_type,
        digest,
    })
}

/// The `mediaType` field of a manifest, when it has one.
fn media_type_of(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(bytes).ok()?.media_type
}

async fn blob(
    app: &App,
    source: &Source,
    target: &Target,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let range = headers.get(header::RANGE).cloned();
    if let Some(cache) = &app.cache {
        return cache.blob(app, source, target, digest, range, head).await;
    }
    stream_blob(app, target, digest, range, head).await
}

/// Streams a blob from the target to the client, verifying a complete (200) body against the
/// digest: on a mismatch the body ends in an error, never cleanly.
pub async fn stream_blob(
    app: &App,
    target: &Target,
    digest: &Digest,
    range: Option<HeaderValue>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let mut headers = HeaderMap::new();
    if let Some(range) = range {
        headers.insert(header::RANGE, range);
    }
    let response = app
        .upstream
        .send(
            target,
            upstream::Request {
                method: if head { Method::HEAD } else { Method::GET },
                path: format!("blobs/{digest}"),
                query: None,
                headers,
            },
        )
        .await?;
    let status = response.status();
    if !(status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT) {
        return Err(upstream_failure(response, target, Kind::Blob).await);
    }
    let (parts, body) = response.into_parts();
    let mut builder = Response::builder()
        .status(status)
        .header(DOCKER_CONTENT_DIGEST, digest.to_string())
        .header(header::ACCEPT_RANGES, "bytes");
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    builder = builder.header(header::CONTENT_TYPE, content_type);
    for name in [header::CONTENT_LENGTH, header::CONTENT_RANGE] {
        if let Some(value) = parts.headers.get(&name) {
            builder = builder.header(name, value);
        }
    }
    let body = if head {
        empty()
    } else if status == StatusCode::OK {
        VerifiedBody::new(body, digest.clone()).boxed_unsync()
    } else {
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
    };
    Ok(builder.body(body).expect("valid response"))
}

async fn tags(
    app: &App,
    route: &Route,
    source: &Source,
    target: &Target,
    n: Option<u32>,
    last: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let mut query = Vec::new();
    if let Some(n) = n {
        query.push(format!("n={n}"));
    }
    if let Some(last) = last {
        query.push(format!("last={}", route::percent_encode(last)));
    }
    let result = app
        .upstream
        .send(
            target,
            upstream::Request {
                method: Method::GET,
                path: "tags/list".to_owned(),
                query: (!query.is_empty()).then(|| query.join("&")),
                headers: HeaderMap::new(),
            },
        )
        .await;
    let response = match (result, &app.cache) {
        (Ok(response), _) if response.status().is_success() => response,
        (Ok(response), _) => return Err(upstream_failure(response, target, Kind::Tags).await),
        (Err(error), Some(cache)) if crate::error::upstream_unavailable(&error) => {
            return cache.local_tags(route, source, n, last, error);
        }
        (Err(error), _) => return Err(error.into()),
    };
    let link = response
        .headers()
        .get(header::LINK)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| rewrite_link(v, &route.client_name, route.ns.as_deref()));
    let bytes = read_limited(response.into_body(), 16 << 20)
        .await
        .map_err(|e| {
            ApiError::bad_gateway(format!("upstream {}: reading tags: {e}", target.host))
        })?;
    let mut list: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_gateway(format!(
            "upstream {} sent an invalid tag list: {e}",
            target.host
        ))
    })?;
    // The upstream names its own repository; the client asked for its name.
    list["name"] = serde_json::Value::String(route.client_name.clone());
    let body = Bytes::from(list.to_string());
    let mut response = json_response(StatusCode::OK, body, route.head);
    if let Some(link) = link {
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}

/// Rewrites an upstream `Link: <…/tags/list?n=2&last=b>; rel="next"` to outpost's own path for the
/// client's name, keeping the pagination query (and containerd's `ns`).
pub fn rewrite_link(link: &str, client_name: &str, ns: Option<&str>) -> Option<String> {
    let start = link.find('<')?;
    let end = link[start..].find('>')? + start;
    let url = &link[start + 1..end];
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("ns="))
        .map(str::to_owned)
        .collect();
    if let Some(ns) = ns {
        params.push(format!("ns={}", route::percent_encode(ns)));
    }
    let query = if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    };
    Some(format!(
        "</v2/{client_name}/tags/list{query}>{}",
        &link[end + 1..]
    ))
}

async fn referrers(
    app: &App,
    target: &Target,
    digest: &Digest,
    artifact_type: Option<&str>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let query = artifact_type.map(|t| format!("artifactType={}", route::percent_encode(t)));
    let response = app
        .upstream
        .send(
            target,
            upstream::Request {
                method: Method::GET,
                path: format!("referrers/{digest}"),
                query,
                headers: HeaderMap::new(),
            },
        )
        .await?;
    if !response.status().is_success() {
        return Err(upstream_failure(response, target, Kind::Referrers).await);
    }
    let (parts, body) = response.into_parts();
    let bytes = read_limited(body, MAX_MANIFEST_BYTES).await.map_err(|e| {
        ApiError::bad_gateway(format!("upstream {}: reading referrers: {e}", target.host))
    })?;
    let mut builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, bytes.len());
    for name in [
        header::CONTENT_TYPE,
        HeaderName::from_static("oci-filters-applied"),
    ] {
        if let Some(value) = parts.headers.get(&name) {
            builder = builder.header(name, value);
        }
    }
    Ok(builder
        .body(if head { empty() } else { full(bytes) })
        .expect("valid response"))
}

/// What was asked for, to pick the OCI code of an upstream's 404.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Manifest,
    Blob,
    Tags,
    Referrers,
}

/// Turns an upstream's error response into the client's error, keeping the upstream's OCI code and
/// message when it sent one, and naming the upstream.
pub async fn upstream_failure(
    response: Response<hyper::body::Incoming>,
    target: &Target,
    kind: Kind,
) -> ApiError {
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let body = read_limited(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let upstream_error = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("errors")?.get(0).cloned());
    let upstream_message = upstream_error
        .as_ref()
        .and_then(|e| e.get("message")?.as_str().map(str::to_owned));
    let what = format!("{}/{}", target.host, target.repository);
    let (status, code) = match status {
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
        _ => (StatusCode::BAD_GATEWAY, crate::error::UNAVAILABLE),
    };
    let message = match upstream_message {
        Some(m) => format!("upstream {what} answered {status}: {m}"),
        None => format!("upstream {what} answered {status}"),
    };
    let mut error = ApiError::new(status, code, message);
    if let Some(detail) = upstream_error
        .and_then(|e| e.get("detail").cloned())
        .filter(|d| !d.is_null())
    {
        error = error.with_detail(detail);
    }
    if let Some(retry_after) = retry_after {
        error.headers.push((header::RETRY_AFTER, retry_after));
    }
    error
}

/// Collects a body of at most `limit` bytes.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, BoxError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let limited = http_body_util::Limited::new(body, limit);
    Ok(limited.collect().await?.to_bytes())
}

/// A body that hashes what passes and holds back its last chunk until the digest is checked, so a
/// client never sees a clean end of wrong bytes.
pub struct VerifiedBody<B> {
    inner: B,
    expected: Digest,
    hasher: Option<Hasher>,
    held: Option<Bytes>,
}

impl<B> VerifiedBody<B> {
    pub fn new(inner: B, expected: Digest) -> Self {
        VerifiedBody {
            hasher: Some(Hasher::new(expected.algorithm())),
            inner,
            expected,
            held: None,
        }
    }
}

/// The bytes of a blob did not hash to its digest.
#[derive(Debug, thiserror::Error)]
#[error("blob content does not match digest {expected} (got {actual}); the transfer was aborted")]
pub struct DigestMismatch {
    pub expected: Digest,
    pub actual: Digest,
}

impl<B> HttpBody for VerifiedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Some(hasher) = this.hasher.as_mut() {
                        hasher.update(&data);
                    }
                    if let Some(previous) = this.held.replace(data) {
                        return Poll::Ready(Some(Ok(Frame::data(previous))));
                    }
                }
                Poll::Ready(None) => {
                    let Some(hasher) = this.hasher.take() else {
                        return Poll::Ready(None);
                    };
                    let actual = hasher.finish();
                    if actual != this.expected {
                        tracing::warn!(expected = %this.expected, %actual, "upstream blob does not match its digest");
                        return Poll::Ready(Some(Err(Box::new(DigestMismatch {
                            expected: this.expected.clone(),
                            actual,
                        }))));
                    }
                    return Poll::Ready(this.held.take().map(|d| Ok(Frame::data(d))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_defaults_to_every_manifest_type() {
        let mut headers = HeaderMap::new();
        assert_eq!(manifest_accept(&headers), MANIFEST_TYPES);
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert_eq!(manifest_accept(&headers), MANIFEST_TYPES);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        headers.append(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json, */*"),
        );
        assert_eq!(
            manifest_accept(&headers),
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, */*"
        );
    }

    #[test]
    fn link_header_points_back_at_outpost() {
        let link = r#"</v2/spectro-images/quay.io/kairos/core/tags/list?last=v2&n=2>; rel="next""#;
        assert_eq!(
            rewrite_link(link, "quay.io/kairos/core", None).unwrap(),
            r#"</v2/quay.io/kairos/core/tags/list?last=v2&n=2>; rel="next""#
        );
        assert_eq!(
            rewrite_link(link, "kairos/core", Some("quay.io")).unwrap(),
            r#"</v2/kairos/core/tags/list?last=v2&n=2&ns=quay.io>; rel="next""#
        );
        assert_eq!(rewrite_link("garbage", "a", None), None);
    }

    #[tokio::test]
    async fn verified_body_withholds_the_end_of_wrong_bytes() {
        let data = Bytes::from_static(b"hello world");
        let good = Digest::compute(storage::Algorithm::Sha256, &data);
        let body = VerifiedBody::new(Full::new(data.clone()), good);
        assert_eq!(body.collect().await.unwrap().to_bytes(), data);

        let wrong = Digest::compute(storage::Algorithm::Sha256, b"other");
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
        ];
        let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let mut body = VerifiedBody::new(stream, wrong);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "hello ");
        let end = body.frame().await.unwrap();
        assert!(
            end.is_err(),
            "the last chunk of a mismatching body was released"
        );
    }
}
