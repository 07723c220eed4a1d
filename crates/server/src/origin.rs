//! The upstream side of a request: what outpost asks an upstream registry for, and how its
//! answers are checked before anything is served or stored. Every function takes the
//! [`Upstream`] client and the translated [`Target`]; none knows of the store or the handlers.
//!
//! - manifests: [`fetch_manifest`] (GET, digest checked, media type parsed at the edge) and
//!   [`revalidate`] (HEAD, the current digest of a tag);
//! - blobs: [`get_blob`] (the fill's download) and [`pass_blob`] (streamed to one client,
//!   verified on the way);
//! - [`fetch_tags`] (every page) and [`fetch_referrers`];
//! - [`VerifiedBody`]: a body whose clean end means its bytes matched the digest.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use oci::{
    Algorithm, Digest, Hasher, MediaType, Reference, Target, MANIFEST_TYPES, MAX_MANIFEST_BYTES,
};
use upstream::Upstream;

use crate::body::{empty, BoxError};
use crate::error::{ApiError, Kind};
use crate::manifest::Manifest;
use crate::referrers;
use crate::response::{self, DOCKER_CONTENT_DIGEST};
use crate::Body;

/// The most of an upstream's error answer that is read.
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// The largest tag list accepted.
const TAGS_LIMIT: usize = 16 << 20;

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

async fn send(
    upstream: &Upstream,
    target: &Target,
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Response<Incoming>, ApiError> {
    Ok(upstream
        .send(
            target,
            upstream::Request {
                method,
                path,
                query,
                headers,
            },
        )
        .await?)
}

/// An upstream's error answer as the client's error (see [`ApiError::upstream_answer`]).
pub async fn failure(response: Response<Incoming>, target: &Target, kind: Kind) -> ApiError {
    let (parts, body) = response.into_parts();
    let body = read_limited(body, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    ApiError::upstream_answer(parts.status, &parts.headers, &body, target, kind)
}

/// GETs a manifest from the target and checks it: by digest, the bytes must match it; by tag,
/// the digest is the upstream's `Docker-Content-Digest` if the bytes match it, or else computed.
/// The media type is the `Content-Type`, else the manifest's own `mediaType` field, else the OCI
/// image manifest; one that is not a valid media type is refused, never passed on.
pub async fn fetch_manifest(
    upstream: &Upstream,
    target: &Target,
    reference: &Reference,
    accept: HeaderValue,
) -> Result<Manifest, ApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, accept);
    let path = format!("manifests/{reference}");
    let response = send(upstream, target, Method::GET, path, None, headers).await?;
    if !response.status().is_success() {
        return Err(failure(response, target, Kind::Manifest).await);
    }
    // A `Content-Type` that is not a media type (or none) leaves the decision to the manifest.
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| MediaType::parse(v).is_ok())
        .map(str::to_owned);
    let claimed = response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let bytes = read_limited(response.into_body(), MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| ApiError::unreadable(target, "the manifest", &e))?;
    let expected = match reference {
        Reference::Digest(d) => Some(d.clone()),
        Reference::Tag(_) => claimed,
    };
    let digest = match expected {
        Some(expected) => {
            let actual = Digest::compute(expected.algorithm(), &bytes);
            if actual != expected {
                return Err(ApiError::invalid_answer(
                    target,
                    format_args!("a manifest {reference} whose digest is {actual}, not {expected}"),
                ));
            }
            actual
        }
        None => Digest::compute(Algorithm::Sha256, &bytes),
    };
    let media_type = oci::manifest_media_type(content_type.as_deref(), &bytes).map_err(|e| {
        ApiError::invalid_answer(
            target,
            format_args!("a manifest {reference} with an invalid media type: {e}"),
        )
    })?;
    Ok(Manifest {
        bytes,
        media_type,
        digest,
    })
}

/// `HEAD`s a manifest upstream: its current digest, `None` when the upstream did not say.
pub async fn revalidate(
    upstream: &Upstream,
    target: &Target,
    reference: &Reference,
    accept: &HeaderValue,
) -> Result<Option<Digest>, ApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, accept.clone());
    let path = format!("manifests/{reference}");
    let response = send(upstream, target, Method::HEAD, path, None, headers).await?;
    if !response.status().is_success() {
        return Err(failure(response, target, Kind::Manifest).await);
    }
    Ok(response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok()))
}

/// GETs a whole blob for a fill: its `Content-Length` when sent, and the unread body.
pub async fn get_blob(
    upstream: &Upstream,
    target: &Target,
    digest: &Digest,
) -> Result<(Option<u64>, Incoming), ApiError> {
    let path = format!("blobs/{digest}");
    let response = send(upstream, target, Method::GET, path, None, HeaderMap::new()).await?;
    if response.status() != StatusCode::OK {
        return Err(failure(response, target, Kind::Blob).await);
    }
    let size = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    Ok((size, response.into_body()))
}

/// Streams a blob from the target to one client, unstored, verifying a complete (200) body
/// against the digest: on a mismatch the body ends in an error, never cleanly.
pub async fn pass_blob(
    upstream: &Upstream,
    target: &Target,
    digest: &Digest,
    range: Option<HeaderValue>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let mut headers = HeaderMap::new();
    if let Some(range) = range {
        headers.insert(header::RANGE, range);
    }
    let method = if head { Method::HEAD } else { Method::GET };
    let path = format!("blobs/{digest}");
    let response = send(upstream, target, method, path, None, headers).await?;
    let status = response.status();
    if !(status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT) {
        return Err(failure(response, target, Kind::Blob).await);
    }
    let (parts, body) = response.into_parts();
    let body = if head {
        empty()
    } else if status == StatusCode::OK {
        VerifiedBody::new(body, digest.clone()).boxed_unsync()
    } else {
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
    };
    Ok(response::passed_blob(status, &parts.headers, digest, body))
}

/// The most pages of an upstream's tag list that outpost reads (each up to `TAGS_LIMIT`).
const MAX_TAG_PAGES: usize = 64;

/// Every tag of the target's repository: `GET tags/list`, then the pages its `Link` headers
/// name (at most [`MAX_TAG_PAGES`]); outpost sorts and paginates them itself
/// ([`crate::paging`]), as upstreams differ (Distribution 2.8 neither sorts nor honours `n`).
pub async fn fetch_tags(upstream: &Upstream, target: &Target) -> Result<Vec<String>, ApiError> {
    let mut tags = Vec::new();
    let mut query: Option<String> = None;
    for _ in 0..MAX_TAG_PAGES {
        let path = "tags/list".to_owned();
        let response = send(
            upstream,
            target,
            Method::GET,
            path,
            query.take(),
            HeaderMap::new(),
        )
        .await?;
        if !response.status().is_success() {
            return Err(failure(response, target, Kind::Tags).await);
        }
        let next = response
            .headers()
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_query);
        let bytes = read_limited(response.into_body(), TAGS_LIMIT)
            .await
            .map_err(|e| ApiError::unreadable(target, "the tag list", &e))?;
        let page = parse_tag_list(&bytes).map_err(|e| {
            ApiError::invalid_answer(target, format_args!("an invalid tag list ({e})"))
        })?;
        tags.extend(page);
        match next {
            Some(next) => query = Some(next),
            None => return Ok(tags),
        }
    }
    tracing::warn!(
        upstream = %target.host, repository = %target.repository, pages = MAX_TAG_PAGES,
        "the upstream's tag list has more pages than outpost reads; listing the first ones"
    );
    Ok(tags)
}

/// The query of the `rel="next"` URL of a `Link` header (`<…/tags/list?n=2&last=b>;
/// rel="next"`), which names the next page of the same list. `None` without one.
pub fn next_query(link: &str) -> Option<String> {
    link.split(',').find_map(|item| {
        let item = item.trim();
        let (url, params) = item.strip_prefix('<')?.split_once('>')?;
        let next = params
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\"") || p.trim() == "rel=next");
        let query = url.split_once('?')?.1;
        (next && !query.is_empty()).then(|| query.to_owned())
    })
}

/// An upstream's `tags/list` body: a JSON object whose `tags`, when present, is a list of
/// strings (or `null`, which some registries send for a repository without tags).
pub fn parse_tag_list(bytes: &[u8]) -> Result<Vec<String>, String> {
    let serde_json::Value::Object(mut list) =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?
    else {
        return Err("not a JSON object".to_owned());
    };
    match list.remove("tags") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(tags)) => tags
            .into_iter()
            .map(|t| match t {
                serde_json::Value::String(t) => Ok(t),
                _ => Err("`tags` is not a list of strings".to_owned()),
            })
            .collect(),
        Some(_) => Err("`tags` is not a list of strings".to_owned()),
    }
}

/// The referrers index of `subject` (unfiltered: outpost filters by `artifactType` itself,
/// [`crate::referrers::answer`]), checked. An upstream without the referrers API (it answers
/// `404`, as Distribution 2.8 does) is asked for the tag schema's referrers tag
/// (`sha256-<hex>`, an OCI index), and a subject with neither gets the empty index, as the
/// spec wants of a repository that exists; `NAME_UNKNOWN` stays for one that does not.
pub async fn fetch_referrers(
    upstream: &Upstream,
    target: &Target,
    subject: &Digest,
) -> Result<Bytes, ApiError> {
    let path = format!("referrers/{subject}");
    let response = send(upstream, target, Method::GET, path, None, HeaderMap::new()).await?;
    let bytes = if response.status() == StatusCode::NOT_FOUND {
        // Read (and drop) the answer so the connection can be reused.
        let _ = read_limited(response.into_body(), MAX_MANIFEST_BYTES).await;
        match referrers_tag(upstream, target, subject).await? {
            Some(bytes) => bytes,
            None => return Ok(referrers::empty()),
        }
    } else if response.status().is_success() {
        read_limited(response.into_body(), MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| ApiError::unreadable(target, "the referrers", &e))?
    } else {
        return Err(failure(response, target, Kind::Referrers).await);
    };
    referrers::parse(&bytes).map_err(|e| {
        ApiError::invalid_answer(target, format_args!("an invalid referrers index ({e})"))
    })?;
    Ok(bytes)
}

/// The tag schema's referrers index of `subject` (the tag `<alg>-<hex>`); `None` when the
/// repository has no such tag.
async fn referrers_tag(
    upstream: &Upstream,
    target: &Target,
    subject: &Digest,
) -> Result<Option<Bytes>, ApiError> {
    let tag = subject.to_string().replacen(':', "-", 1);
    let Ok(tag) = oci::Tag::parse(&tag) else {
        return Ok(None);
    };
    let accept = HeaderValue::from_static(oci::OCI_INDEX);
    match fetch_manifest(upstream, target, &Reference::Tag(tag), accept).await {
        Ok(manifest) => Ok(Some(manifest.bytes)),
        Err(e) if e.status == StatusCode::NOT_FOUND && e.code == "MANIFEST_UNKNOWN" => Ok(None),
        Err(e) => Err(e),
    }
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
    use http_body_util::Full;

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

    #[tokio::test]
    async fn verified_body_withholds_the_end_of_wrong_bytes() {
        let data = Bytes::from_static(b"hello world");
        let good = Digest::compute(Algorithm::Sha256, &data);
        let body = VerifiedBody::new(Full::new(data.clone()), good);
        assert_eq!(body.collect().await.unwrap().to_bytes(), data);

        let wrong = Digest::compute(Algorithm::Sha256, b"other");
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
