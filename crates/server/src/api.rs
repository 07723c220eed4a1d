//! The handlers of the OCI Distribution read API: one per operation. Each request is routed
//! ([`crate::route`]), translated once ([`config::translate`]), then answered from the cache
//! ([`crate::cache`]) or, with the local registry disabled, straight from the upstream
//! ([`crate::origin`]). Nothing below the handlers imports them.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use oci::{Digest, Reference, Source, Target};

use crate::app::App;
use crate::body::Body;
use crate::error::ApiError;
use crate::metrics;
use crate::origin;
use crate::paging;
use crate::response::{self, Outcome, API_VERSION, STALE_WARNING};
use crate::route::{self, Operation, Route};

/// Answers one request. Never fails: errors become OCI error responses.
pub async fn handle(app: Arc<App>, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    let routed = route::route(
        request.method(),
        request.uri().path(),
        request.uri().query(),
        &app.config.default_registry,
    );
    let mut response = match routed {
        Ok(route) => {
            // Translated once here; the handlers and the access log share it.
            let target = route
                .operation
                .source()
                .map(|source| config::translate(&app.config, source));
            let dispatched = dispatch(&app, &route, target.as_ref(), request.headers()).await;
            let mut response = match dispatched {
                Ok(response) => response,
                Err(error) => error.into_response(head),
            };
            let outcome = response.extensions_mut().get_or_insert_default::<Outcome>();
            outcome.operation = Some(metrics::operation_name(&route.operation));
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
        _ => return Box::pin(repository_free(app, route)).await,
    };
    // Without a store, every request goes upstream: refuse a host outpost may not reach first.
    // (With one, the cache checks before it connects, and stored content is served whatever.)
    if app.cache.is_none() {
        app.config
            .check_upstream(&target.host)
            .map_err(ApiError::upstream_not_allowed)?;
    }
    // Each operation's future boxed: a request's future is as large as the operation it makes,
    // not the largest of them all (a blob fill's state is kilobytes; a manifest hit's is not).
    match &route.operation {
        Operation::Manifest { reference, .. } => {
            Box::pin(manifest(
                app, source, target, reference, headers, route.head,
            ))
            .await
        }
        Operation::Blob { digest, .. } => {
            Box::pin(blob(app, source, target, digest, headers, route.head)).await
        }
        Operation::Tags { n, last, .. } => {
            Box::pin(tags(app, route, source, target, *n, last.as_deref())).await
        }
        Operation::Referrers {
            digest,
            artifact_type,
            ..
        } => {
            let artifact_type = artifact_type.as_deref();
            Box::pin(referrers(
                app,
                source,
                target,
                digest,
                artifact_type,
                route.head,
            ))
            .await
        }
        Operation::Base | Operation::Catalog { .. } => Box::pin(repository_free(app, route)).await,
    }
}

/// The operations on no repository: the version check and the catalog.
async fn repository_free(app: &App, route: &Route) -> Result<Response<Body>, ApiError> {
    match &route.operation {
        Operation::Catalog { n, last } => {
            let repositories = match &app.cache {
                Some(cache) => cache.repositories().await?,
                None => Vec::new(),
            };
            Ok(catalog(repositories, *n, last.as_deref(), route.head))
        }
        _ => Ok(response::json(
            StatusCode::OK,
            Bytes::from_static(b"{}"),
            route.head,
        )),
    }
}

/// `_catalog`: one page of the sorted repository names after `last`, with a `Link` to the next.
fn catalog(
    repositories: Vec<String>,
    n: Option<u32>,
    last: Option<&str>,
    head: bool,
) -> Response<Body> {
    let (repositories, more) = paging::page(repositories, n, last);
    let link = paging::next_link("/v2/_catalog", &repositories, more, n, None);
    let body = serde_json::json!({ "repositories": repositories }).to_string();
    let mut response = response::json(StatusCode::OK, body.into(), head);
    if let Some(value) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

async fn manifest(
    app: &App,
    source: &Source,
    target: &Target,
    reference: &Reference,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let accept = origin::manifest_accept(headers);
    if let Some(cache) = &app.cache {
        return cache
            .manifest(source, target, reference, accept, head)
            .await;
    }
    let manifest = origin::fetch_manifest(&app.upstream, target, reference, accept).await?;
    Ok(response::manifest(&manifest, head))
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
        return cache.blob(source, target, digest, range, head).await;
    }
    origin::pass_blob(&app.upstream, target, digest, range, head).await
}

/// `tags/list`: every tag of the upstream's list (or, when the upstream is unavailable, the tags
/// known locally: the same stale-if-error rule as manifests), sorted and paginated by outpost
/// ([`paging`]), under the client's name, with a `Link` to the next page.
async fn tags(
    app: &App,
    route: &Route,
    source: &Source,
    target: &Target,
    n: Option<u32>,
    last: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let fetch = origin::fetch_tags(&app.upstream, target);
    let fetched = match &app.cache {
        Some(cache) => cache.ask(target, fetch).await,
        None => fetch.await,
    };
    let (tags, stale) = match (fetched, &app.cache) {
        (Ok(tags), _) => (tags, false),
        (Err(error), Some(cache)) if error.is_unavailable() => {
            (cache.local_tags(source, error).await?, true)
        }
        (Err(error), _) => return Err(error),
    };
    let (tags, more) = paging::page(tags, n, last);
    let path = format!("/v2/{}/tags/list", route.client_name);
    let link = paging::next_link(&path, &tags, more, n, route.ns.as_deref());
    let body = serde_json::json!({ "name": route.client_name, "tags": tags }).to_string();
    let mut response = response::json(StatusCode::OK, body.into(), route.head);
    if let Some(value) = link.and_then(|link| HeaderValue::from_str(&link).ok()) {
        response.headers_mut().insert(header::LINK, value);
    }
    if stale {
        response
            .headers_mut()
            .insert(header::WARNING, HeaderValue::from_static(STALE_WARNING));
        return Ok(response::mark(response, "stale"));
    }
    Ok(response)
}

/// `referrers/<digest>`: the referrers index of the subject (from the store under the tag TTL
/// rules, or the upstream's referrers API, or its tag schema), filtered by `artifactType`.
async fn referrers(
    app: &App,
    source: &Source,
    target: &Target,
    subject: &Digest,
    artifact_type: Option<&str>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    if let Some(cache) = &app.cache {
        return cache
            .referrers(source, target, subject, artifact_type, head)
            .await;
    }
    let index = origin::fetch_referrers(&app.upstream, target, subject).await?;
    crate::cache::answer_referrers(&index, artifact_type, head, target)
}
