//! How prefetch gets one manifest or blob: through the same code a client pull runs.
//!
//! - [`Puller::Local`]: outpost's own app, built in-process on the data dir: manifests through
//!   [`Cache::manifest`](server::Cache::manifest) and blobs through
//!   [`Cache::blob`](server::Cache::blob): translation, credentials, verification, the
//!   single-flight fill into the store, infrastructure images passed through unstored.
//! - [`Puller::Server`]: a running outpost, asked over HTTP(S) like a client would
//!   (`/v2/<registry>/<repository>/…`); it stores what it fetches. Bodies are verified here
//!   against their digests, as a client does.

use std::sync::Arc;

use bytes::Bytes;
use config::translate;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use oci::{
    Descriptor, Digest, Hasher, ManifestContent, MediaType, Reference, Source, Target, TlsPolicy,
    MANIFEST_TYPES, MAX_MANIFEST_BYTES,
};
use server::{ApiError, App, Body, Manifest};

/// Where a blob's bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobFrom {
    /// Downloaded from the upstream (and stored, unless an infrastructure image).
    Upstream,
    /// Already in the local store: not downloaded again.
    Store,
    /// Transferred from a running outpost, which answered from its store or its upstream.
    Server,
}

/// How prefetch reaches the content.
pub enum Puller {
    /// The app in-process, on its own data dir.
    Local(Arc<App>),
    /// A running outpost, through an app without a store.
    Server {
        app: Arc<App>,
        server: RunningServer,
    },
}

/// A running outpost as an upstream: `/v2/<registry>/<repository>/…` on its host.
pub struct RunningServer {
    /// `host[:port]`
    pub host: String,
    pub tls: TlsPolicy,
}

impl RunningServer {
    fn target(&self, source: &Source) -> Target {
        Target {
            host: self.host.clone(),
            repository: source.to_string(),
            credentials: None,
            tls: self.tls.clone(),
        }
    }
}

impl Puller {
    /// Whether blobs of `source` are kept in the store (false for infrastructure images).
    pub fn stores(&self, source: &Source) -> bool {
        match self {
            Puller::Local(app) => app
                .cache
                .as_ref()
                .is_some_and(|cache| !cache.is_infrastructure(source)),
            // Asked locally from the configuration: the server decides with the same rules.
            Puller::Server { app, .. } => !app.config.is_infrastructure(source),
        }
    }

    /// Fetches and verifies the manifest `reference` of `source`.
    pub async fn manifest(
        &self,
        source: &Source,
        reference: &Reference,
    ) -> Result<Manifest, ApiError> {
        let accept = HeaderValue::from_static(MANIFEST_TYPES);
        match self {
            Puller::Local(app) => {
                let cache = app.cache.as_ref().ok_or_else(no_store)?;
                let target = translate(&app.config, source);
                let response = cache
                    .manifest(source, &target, reference, accept, false)
                    .await?;
                let unstored = self.stores(source) && server::passed_through(&response);
                let manifest = manifest_of(response, reference).await?;
                if unstored {
                    let why = cache
                        .refuses_room(manifest.bytes.len() as u64)
                        .unwrap_or_else(|| UNSTORED.to_owned());
                    let what = format!("the manifest {reference} of {source}");
                    return Err(ApiError::not_stored(what, &why));
                }
                Ok(manifest)
            }
            Puller::Server { app, server } => {
                let target = server.target(source);
                server::fetch_manifest(&app.upstream, &target, reference, accept).await
            }
        }
    }

    /// The referrers of `subject` in `source` (signatures, attestations, SBOMs): stored by the
    /// local cache (or the server) like any referrers request, as descriptors.
    pub async fn referrers(
        &self,
        source: &Source,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>, ApiError> {
        let bytes = match self {
            Puller::Local(app) => {
                let cache = app.cache.as_ref().ok_or_else(no_store)?;
                let target = translate(&app.config, source);
                let response = cache
                    .referrers(source, &target, subject, None, false)
                    .await?;
                let (parts, body) = response.into_parts();
                if parts.status != StatusCode::OK {
                    return Err(ApiError::bad_gateway(format!(
                        "the referrers of {subject} were answered with {}",
                        parts.status
                    )));
                }
                server::read_limited(body, MAX_MANIFEST_BYTES)
                    .await
                    .map_err(|e| {
                        ApiError::bad_gateway(format!("reading the referrers of {subject}: {e}"))
                    })?
            }
            Puller::Server { app, server } => {
                let target = server.target(source);
                server::fetch_referrers(&app.upstream, &target, subject).await?
            }
        };
        let digest = Digest::compute(oci::Algorithm::Sha256, &bytes);
        match ManifestContent::parse(&digest, oci::OCI_INDEX, &bytes) {
            Ok(ManifestContent::Index { manifests }) => Ok(manifests),
            Ok(ManifestContent::Image { .. }) => Ok(Vec::new()),
            Err(e) => Err(ApiError::bad_gateway(format!(
                "the referrers of {subject} are not an index: {e}"
            ))),
        }
    }

    /// Fetches blob `descriptor` of `source` unless it is stored, verifying it, and calls
    /// `progress` with every chunk's length.
    pub async fn blob(
        &self,
        source: &Source,
        descriptor: &Descriptor,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<BlobFrom, ApiError> {
        let digest = &descriptor.digest;
        let not_stored =
            |why: &str| ApiError::not_stored(format!("blob {digest} of {source}"), why);
        let keeps = self.stores(source);
        let (response, from) = match self {
            Puller::Local(app) => {
                let cache = app.cache.as_ref().ok_or_else(no_store)?;
                if keeps {
                    let stored = cache.store().stat(digest).await.map_err(ApiError::from)?;
                    if stored.is_some() {
                        progress(descriptor.size);
                        return Ok(BlobFrom::Store);
                    }
                    // Not downloaded at all when it could not be kept.
                    if let Some(why) = cache.refuses_room(descriptor.size) {
                        return Err(not_stored(&why));
                    }
                }
                let target = translate(&app.config, source);
                let response = cache.blob(source, &target, digest, None, false).await?;
                (response, BlobFrom::Upstream)
            }
            Puller::Server { app, server } => {
                let target = server.target(source);
                let response =
                    server::pass_blob(&app.upstream, &target, digest, None, false).await?;
                (response, BlobFrom::Server)
            }
        };
        let unstored = keeps && server::passed_through(&response);
        let received = drain(response, digest, progress).await?;
        if unstored {
            return Err(not_stored(UNSTORED));
        }
        if received != descriptor.size {
            return Err(ApiError::bad_gateway(format!(
                "blob {digest} of {source} has {received} bytes, its manifest says {}; nothing \
                 was kept",
                descriptor.size
            )));
        }
        Ok(from)
    }
}

/// Why something was passed through unstored, when the room it needed is there again by the
/// time it is asked (another download finished, or the store failed to write it).
const UNSTORED: &str = "the store passed it through unstored (outpost's log says why)";

/// A local puller is built only with a store; this is the error if it had none.
fn no_store() -> ApiError {
    ApiError::bad_gateway("the local registry is disabled: there is no store to prefetch into")
}

/// The manifest in a cache response (status, body, `Content-Type`, `Docker-Content-Digest`),
/// checked again against its digest.
async fn manifest_of(
    response: Response<Body>,
    reference: &Reference,
) -> Result<Manifest, ApiError> {
    let (parts, body) = response.into_parts();
    let bytes: Bytes = server::read_limited(body, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| ApiError::bad_gateway(format!("reading the manifest {reference}: {e}")))?;
    if parts.status != StatusCode::OK {
        return Err(ApiError::bad_gateway(format!(
            "the manifest {reference} was answered with {}",
            parts.status
        )));
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let digest = header(server::DOCKER_CONTENT_DIGEST.as_str())
        .and_then(|d| d.parse::<Digest>().ok())
        .ok_or_else(|| {
            ApiError::bad_gateway(format!("the manifest {reference} came without its digest"))
        })?;
    if Digest::compute(digest.algorithm(), &bytes) != digest {
        return Err(ApiError::bad_gateway(format!(
            "the manifest {reference} does not match its digest {digest}"
        )));
    }
    let media_type = header(header::CONTENT_TYPE.as_str())
        .and_then(|m| MediaType::parse(&m).ok())
        .unwrap_or_else(MediaType::oci_manifest);
    Ok(Manifest {
        bytes,
        media_type,
        digest,
    })
}

/// Reads a blob response to its end, hashing it (a body that ends in an error, e.g. a digest
/// mismatch detected upstream of here, fails too). Returns the bytes received.
async fn drain(
    response: Response<Body>,
    digest: &Digest,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, ApiError> {
    let (parts, mut body) = response.into_parts();
    if parts.status != StatusCode::OK {
        return Err(ApiError::bad_gateway(format!(
            "blob {digest} was answered with {}",
            parts.status
        )));
    }
    let mut hasher = Hasher::new(digest.algorithm());
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_gateway(format!("downloading blob {digest}: {e}")))?;
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            received += data.len() as u64;
            progress(data.len() as u64);
        }
    }
    let actual = hasher.finish();
    if &actual != digest {
        return Err(ApiError::bad_gateway(format!(
            "blob {digest} arrived with the content of {actual}; nothing was kept"
        )));
    }
    Ok(received)
}
