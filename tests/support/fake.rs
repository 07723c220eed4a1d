//! An in-process fake OCI registry (and a fake blob CDN) for black-box tests.
//!
//! [`FakeRegistry::start`] binds `127.0.0.1:0` and serves the pull side of the OCI Distribution
//! API over plain HTTP from memory ([`FakeRegistry::start_tls`]: HTTPS only, with HTTP/2 by ALPN):
//!
//! - `GET /v2/`, `GET|HEAD /v2/<name>/manifests/<tag|digest>`, `GET|HEAD /v2/<name>/blobs/<digest>`
//!   (with `Range`), `GET /v2/<name>/tags/list` (with `n`, `last` and a `Link` header),
//!   `GET /v2/<name>/referrers/<digest>` (every manifest whose `subject` is the digest; or, with
//!   [`FakeRegistry::referrers_api`] off, `404 page not found`); 404 with an OCI error body for anything
//!   unknown. Manifests honour `Accept` like real registries: a manifest whose media type is not
//!   listed (nor `*/*`) answers 404, and a request without `Accept` gets 404 too.
//! - Auth: [`Auth::None`], [`Auth::Basic`], [`Auth::Bearer`] with a token endpoint at `/token` on
//!   the same server (anonymous or with a user), configurable `expires_in`, counted fetches and
//!   [`FakeRegistry::invalidate_tokens`].
//! - Faults: the next N requests answered with a status (429 + `Retry-After`), a corrupted blob
//!   body, throttled or stalled blob bodies, delayed responses, blob GETs redirected to a
//!   [`FakeCdn`] (which answers 403 to anything carrying `Authorization`), and stop/restart on
//!   the same port.
//! - Counters: every request is logged ([`RecordedRequest`]) with its headers, and the bytes of
//!   blob bodies sent are counted.
//!
//! ```text
//! let fake = FakeRegistry::start().await;
//! let digest = fake.add_blob("library/alpine", b"layer".to_vec());
//! fake.set_auth(Auth::basic("alice", "pw"));
//! // ... drive outpost against fake.host() ...
//! assert_eq!(fake.requests_matching("GET", "/blobs/").len(), 1);
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use oci::{Algorithm, Digest, Hasher};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `service` the fake's Bearer challenges name.
pub const SERVICE: &str = "fake-registry";

/// How the fake wants clients to authenticate on `/v2/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic {
        username: String,
        password: String,
    },
    /// Tokens from `/token`; with `credentials`, the token endpoint demands Basic with them.
    Bearer {
        credentials: Option<(String, String)>,
        expires_in: u64,
    },
}

impl Auth {
    pub fn basic(username: &str, password: &str) -> Auth {
        Auth::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    pub fn bearer(username: &str, password: &str, expires_in: u64) -> Auth {
        Auth::Bearer {
            credentials: Some((username.to_owned(), password.to_owned())),
            expires_in,
        }
    }

    pub fn anonymous_bearer(expires_in: u64) -> Auth {
        Auth::Bearer {
            credentials: None,
            expires_in,
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub version: http::Version,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

impl RecordedRequest {
    /// The request's `Authorization` header, if any.
    pub fn authorization(&self) -> Option<&str> {
        self.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
enum Content {
    Bytes(Bytes),
    /// `block` repeated up to `len` bytes: large blobs without large memory.
    Repeated {
        block: Bytes,
        len: u64,
    },
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Repeated { len, .. } => *len,
        }
    }

    /// The bytes in `[start, end)` as zero-copy chunks of at most `max` bytes.
    fn chunk_at(&self, offset: u64, end: u64, max: usize) -> Bytes {
        let want = ((end - offset) as usize).min(max);
        match self {
            Content::Bytes(b) => b.slice(offset as usize..offset as usize + want),
            Content::Repeated { block, .. } => {
                let at = (offset % block.len() as u64) as usize;
                let n = want.min(block.len() - at);
                block.slice(at..at + n)
            }
        }
    }
}

struct Manifest {
    media_type: String,
    bytes: Bytes,
}

#[derive(Default)]
struct Repo {
    blobs: HashMap<Digest, Content>,
    manifests: HashMap<Digest, Manifest>,
    tags: BTreeMap<String, Digest>,
}

/// A canned answer for the next requests.
struct Canned {
    remaining: usize,
    status: StatusCode,
    retry_after: Option<u64>,
}

enum Role {
    Registry,
    /// Serves `GET /blobs/<digest>` from the origin's content; 403 to any `Authorization`.
    Cdn {
        origin: Arc<State>,
    },
}

struct State {
    role: Role,
    addr: Mutex<SocketAddr>,
    https: AtomicBool,
    repos: Mutex<HashMap<String, Repo>>,
    auth: Mutex<Auth>,
    issued_tokens: Mutex<HashMap<String, Instant>>,
    tokens_issued: AtomicU64,
    token_fetches: AtomicUsize,
    /// Tokens are issued but never accepted (a registry that wants another kind of token).
    refuse_tokens: AtomicBool,
    /// Blob bodies are sent chunked, without a `Content-Length`.
    chunked_blobs: AtomicBool,
    /// The body every `tags/list` is answered with (200), instead of the repository's tags.
    tags_body: Mutex<Option<Bytes>>,
    /// Pages of `tags/list` without `n` (as GHCR and Quay paginate by default).
    tag_page_size: Mutex<Option<usize>>,
    /// `false`: no referrers API (`404 page not found`, as Distribution 2.8 answers).
    referrers_api: AtomicBool,
    realm_host: Mutex<Option<String>>,
    log: Mutex<Vec<RecordedRequest>>,
    blob_bytes_sent: Arc<AtomicU64>,
    canned: Mutex<Option<Canned>>,
    corrupt: Mutex<HashSet<Digest>>,
    throttle: Mutex<Option<u64>>,
    stall_after: Mutex<Option<u64>>,
    release: watch::Sender<u64>,
    response_delay: Mutex<Option<Duration>>,
    redirect_blobs_to: Mutex<Option<String>>,
    cdn_rejected: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn new(role: Role) -> State {
        State {
            role,
            addr: Mutex::new(SocketAddr::from(([127, 0, 0, 1], 0))),
            https: AtomicBool::new(false),
            repos: Mutex::new(HashMap::new()),
            auth: Mutex::new(Auth::None),
            issued_tokens: Mutex::new(HashMap::new()),
            tokens_issued: AtomicU64::new(0),
            token_fetches: AtomicUsize::new(0),
            refuse_tokens: AtomicBool::new(false),
            chunked_blobs: AtomicBool::new(false),
            tags_body: Mutex::new(None),
            tag_page_size: Mutex::new(None),
            referrers_api: AtomicBool::new(true),
            realm_host: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            blob_bytes_sent: Arc::new(AtomicU64::new(0)),
            canned: Mutex::new(None),
            corrupt: Mutex::new(HashSet::new()),
            throttle: Mutex::new(None),
            stall_after: Mutex::new(None),
            release: watch::channel(0).0,
            response_delay: Mutex::new(None),
            redirect_blobs_to: Mutex::new(None),
            cdn_rejected: AtomicUsize::new(0),
        }
    }
}

/// A running HTTP server bound to one loopback port, which can be stopped and restarted.
struct Server {
    state: Arc<State>,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    async fn start(state: Arc<State>, tls: Option<TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        *lock(&state.addr) = addr;
        state.https.store(tls.is_some(), Ordering::SeqCst);
        let accept = tokio::spawn(accept_loop(listener, state.clone(), tls.clone()));
        Server {
            state,
            addr,
            tls,
            accept: Mutex::new(Some(accept)),
        }
    }

    async fn stop(&self) {
        let task = lock(&self.accept).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restart(&self) {
        self.stop().await;
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        *lock(&self.accept) = Some(tokio::spawn(accept_loop(
            listener,
            self.state.clone(),
            self.tls.clone(),
        )));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.accept).take() {
            task.abort();
        }
    }
}

/// Accepts connections until aborted; aborting drops the `JoinSet`, which closes every open
/// connection too (so a stopped fake really is offline).
async fn accept_loop(listener: TcpListener, state: Arc<State>, tls: Option<TlsAcceptor>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => {
                    // A failed handshake (e.g. a client that does not trust the certificate)
                    // just closes the connection.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
        });
    }
}

/// A small OCI image added to a fake registry with [`FakeRegistry::push_image`].
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// The manifest's digest and bytes.
    pub digest: Digest,
    pub manifest: Bytes,
    pub config: (Digest, Bytes),
    pub layers: Vec<(Digest, Bytes)>,
}

impl PushedImage {
    /// The config blob, then the layers.
    pub fn blobs(&self) -> impl Iterator<Item = &(Digest, Bytes)> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

/// The fake registry. Dropping it shuts the server down.
pub struct FakeRegistry {
    server: Server,
}

impl FakeRegistry {
    /// Starts a registry with no content and no auth on `127.0.0.1:<free port>`.
    pub async fn start() -> FakeRegistry {
        FakeRegistry {
            server: Server::start(Arc::new(State::new(Role::Registry)), None).await,
        }
    }

    /// Starts a registry that speaks HTTPS only (HTTP/1.1, and HTTP/2 when the client offers it
    /// through ALPN and `config` lists `h2`), e.g. with `certs::ServerTls::server_config()`.
    pub async fn start_tls(config: Arc<tokio_rustls::rustls::ServerConfig>) -> FakeRegistry {
        FakeRegistry {
            server: Server::start(
                Arc::new(State::new(Role::Registry)),
                Some(TlsAcceptor::from(config)),
            )
            .await,
        }
    }

    /// Starts an HTTPS-only registry whose certificate (for 127.0.0.1, ::1 and localhost) a fresh
    /// CA signed, as `outpost certs generate` makes them; returns it, the CA's PEM and the dir
    /// holding the files (keep it alive).
    pub async fn start_tls_with_ca() -> (FakeRegistry, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let generated = certs::generate(dir.path(), &certs::default_sans(), 30, false)
            .expect("generate certificates");
        let tls =
            certs::ServerTls::new(&generated.layout.server_cert, &generated.layout.server_key)
                .expect("load the generated certificate");
        let fake = FakeRegistry::start_tls(tls.server_config()).await;
        let ca = std::fs::read_to_string(&generated.layout.ca_cert).expect("read the CA");
        (fake, ca, dir)
    }

    fn state(&self) -> &State {
        &self.server.state
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `127.0.0.1:<port>`, the form outpost's configuration uses for a registry host.
    pub fn host(&self) -> String {
        self.server.addr.to_string()
    }

    /// `http://127.0.0.1:<port>` (`https://` for [`FakeRegistry::start_tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.server.addr)
    }

    /// Stores a blob in `repo`; returns its sha256 digest.
    pub fn add_blob(&self, repo: &str, bytes: impl Into<Bytes>) -> Digest {
        let bytes = bytes.into();
        let digest = Digest::compute(Algorithm::Sha256, &bytes);
        self.insert_blob(repo, digest.clone(), Content::Bytes(bytes));
        digest
    }

    /// Stores a blob of `len` bytes made of a 1 MiB pseudo-random block repeated, without
    /// holding `len` bytes in memory. Returns its sha256 digest (hashing takes a moment).
    pub fn add_large_blob(&self, repo: &str, len: u64, seed: u64) -> Digest {
        let block = pseudo_random_block(1 << 20, seed);
        let content = Content::Repeated {
            block: block.clone(),
            len,
        };
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut offset = 0;
        while offset < len {
            let chunk = content.chunk_at(offset, len, 1 << 20);
            hasher.update(&chunk);
            offset += chunk.len() as u64;
        }
        let digest = hasher.finish();
        self.insert_blob(repo, digest.clone(), content);
        digest
    }

    fn insert_blob(&self, repo: &str, digest: Digest, content: Content) {
        lock(&self.state().repos)
            .entry(repo.to_owned())
            .or_default()
            .blobs
            .insert(digest, content);
    }

    /// Stores a synthetic image made from `seed`: a config naming the seed and one layer per
    /// entry of `layer_sizes`, layer `i` filled with the byte `seed + i`.
    pub fn push_seeded(
        &self,
        repo: &str,
        tag: Option<&str>,
        seed: u8,
        layer_sizes: &[usize],
    ) -> PushedImage {
        self.push_image(
            repo,
            tag,
            &format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#),
            layer_sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| Bytes::from(vec![seed.wrapping_add(i as u8); size]))
                .collect(),
        )
    }

    /// Stores an image: `config` (JSON) and `layers` as blobs, and an OCI manifest over them,
    /// reachable by digest and, with `tag`, by that tag.
    pub fn push_image(
        &self,
        repo: &str,
        tag: Option<&str>,
        config: &str,
        layers: Vec<Bytes>,
    ) -> PushedImage {
        let config = Bytes::from(config.to_owned());
        let config = (self.add_blob(repo, config.clone()), config);
        let layers: Vec<(Digest, Bytes)> = layers
            .into_iter()
            .map(|layer| (self.add_blob(repo, layer.clone()), layer))
            .collect();
        let descriptor = |(digest, bytes): &(Digest, Bytes), media_type: &str| serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()});
        let manifest = Bytes::from(
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(&config, "application/vnd.oci.image.config.v1+json"),
                "layers": layers
                    .iter()
                    .map(|l| descriptor(l, "application/vnd.oci.image.layer.v1.tar"))
                    .collect::<Vec<_>>(),
            })
            .to_string(),
        );
        let digest = match tag {
            Some(tag) => self.add_manifest(repo, tag, OCI_MANIFEST, manifest.clone()),
            None => self.add_manifest_by_digest(repo, OCI_MANIFEST, manifest.clone()),
        };
        PushedImage {
            digest,
            manifest,
            config,
            layers,
        }
    }

    /// Stores a signature-like artifact referring to `subject` (an OCI manifest with
    /// `artifactType`, an empty config and `payload` as its one layer, and `subject`), reachable
    /// by digest, as cosign 2 and notation push them to a registry with the referrers API.
    pub fn push_referrer(
        &self,
        repo: &str,
        subject: &PushedImage,
        artifact_type: &str,
        payload: &[u8],
    ) -> PushedImage {
        let config = Bytes::from_static(b"{}");
        let config = (self.add_blob(repo, config.clone()), config);
        let layer = Bytes::copy_from_slice(payload);
        let layers = vec![(self.add_blob(repo, layer.clone()), layer)];
        let manifest = Bytes::from(
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.0.to_string(), "size": 2},
                "layers": [{"mediaType": "application/octet-stream", "digest": layers[0].0.to_string(), "size": layers[0].1.len()}],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest.to_string(), "size": subject.manifest.len()},
                "annotations": {"org.opencontainers.image.created": "2026-12-02T00:00:00Z"},
            })
            .to_string(),
        );
        let digest = self.add_manifest_by_digest(repo, OCI_MANIFEST, manifest.clone());
        PushedImage {
            digest,
            manifest,
            config,
            layers,
        }
    }

    /// Whether `GET referrers/<digest>` is served (default) or answered `404 page not found`
    /// as by a registry without the referrers API (Distribution 2.8).
    pub fn referrers_api(&self, on: bool) {
        self.state().referrers_api.store(on, Ordering::SeqCst);
    }

    /// Stores a manifest under its digest and tags it `tag`; returns the digest.
    pub fn add_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        bytes: impl Into<Bytes>,
    ) -> Digest {
        let digest = self.add_manifest_by_digest(repo, media_type, bytes);
        lock(&self.state().repos)
            .entry(repo.to_owned())
            .or_default()
            .tags
            .insert(tag.to_owned(), digest.clone());
        digest
    }

    /// Stores a manifest reachable only by digest; returns the digest.
    pub fn add_manifest_by_digest(
        &self,
        repo: &str,
        media_type: &str,
        bytes: impl Into<Bytes>,
    ) -> Digest {
        let bytes = bytes.into();
        let digest = Digest::compute(Algorithm::Sha256, &bytes);
        lock(&self.state().repos)
            .entry(repo.to_owned())
            .or_default()
            .manifests
            .insert(
                digest.clone(),
                Manifest {
                    media_type: media_type.to_owned(),
                    bytes,
                },
            );
        digest
    }

    /// Points `tag` at another digest (or adds it), e.g. to simulate a tag moving upstream.
    pub fn tag(&self, repo: &str, tag: &str, digest: &Digest) {
        lock(&self.state().repos)
            .entry(repo.to_owned())
            .or_default()
            .tags
            .insert(tag.to_owned(), digest.clone());
    }

    pub fn set_auth(&self, auth: Auth) {
        *lock(&self.state().auth) = auth;
    }

    /// Advertise the token realm on `host` (e.g. `localhost:<port>`) instead of
    /// `127.0.0.1:<port>`: the same server, another "domain".
    pub fn set_realm_host(&self, host: &str) {
        *lock(&self.state().realm_host) = Some(host.to_owned());
    }

    /// The realm URL the Bearer challenge names.
    pub fn realm(&self) -> String {
        realm(self.state())
    }

    /// Every token issued so far stops being accepted (the next request gets a 401).
    pub fn invalidate_tokens(&self) {
        lock(&self.state().issued_tokens).clear();
    }

    /// Sends blob bodies without a `Content-Length` (chunked), so their size is unknown until
    /// they end.
    pub fn chunked_blobs(&self, chunked: bool) {
        self.state().chunked_blobs.store(chunked, Ordering::SeqCst);
    }

    /// Answers every `tags/list` with `200` and this body (`None`: the repository's tags).
    pub fn tags_body(&self, body: Option<&'static str>) {
        *lock(&self.state().tags_body) = body.map(|b| Bytes::from_static(b.as_bytes()));
    }

    /// Answers `tags/list` without `n` in pages of `size` tags, each with a `Link` to the next
    /// (`None`: the whole list).
    pub fn tag_page_size(&self, size: Option<usize>) {
        *lock(&self.state().tag_page_size) = size;
    }

    /// Keeps issuing tokens but refuses every one of them on `/v2/` (as a registry does whose
    /// realm hands out anonymous tokens it then does not honour for private content).
    pub fn refuse_tokens(&self, refuse: bool) {
        self.state().refuse_tokens.store(refuse, Ordering::SeqCst);
    }

    /// Requests to `/token` so far (successful or not).
    pub fn token_fetches(&self) -> usize {
        self.state().token_fetches.load(Ordering::SeqCst)
    }

    /// Answers the next `n` requests under `/v2/` with `status` (e.g. 429, 503), with
    /// `Retry-After: <retry_after>` when given.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        *lock(&self.state().canned) = Some(Canned {
            remaining: n,
            status: StatusCode::from_u16(status).expect("valid status"),
            retry_after,
        });
    }

    /// Serves `digest`'s body with its first byte flipped (same length, same
    /// `Docker-Content-Digest`), here and on a CDN it redirects to.
    pub fn corrupt_blob(&self, digest: &Digest) {
        lock(&self.state().corrupt).insert(digest.clone());
    }

    /// Serves `digest`'s body intact again after [`FakeRegistry::corrupt_blob`].
    pub fn repair_blob(&self, digest: &Digest) {
        lock(&self.state().corrupt).remove(digest);
    }

    /// Serves `bytes` as the manifest `digest` although they hash to something else: an upstream
    /// that answers a digest request with the wrong content.
    pub fn add_manifest_under_wrong_digest(
        &self,
        repo: &str,
        digest: &Digest,
        media_type: &str,
        bytes: impl Into<Bytes>,
    ) {
        lock(&self.state().repos)
            .entry(repo.to_owned())
            .or_default()
            .manifests
            .insert(
                digest.clone(),
                Manifest {
                    media_type: media_type.to_owned(),
                    bytes: bytes.into(),
                },
            );
    }

    /// Limits blob bodies to `bytes_per_second` (`None`: full speed).
    pub fn throttle_blobs(&self, bytes_per_second: Option<u64>) {
        throttle(self.state(), bytes_per_second);
    }

    /// Blob bodies pause after `bytes` bytes until [`FakeRegistry::release_blobs`].
    pub fn stall_blobs_after(&self, bytes: u64) {
        *lock(&self.state().stall_after) = Some(bytes);
    }

    /// Lets stalled blob bodies continue, and stops stalling new ones.
    pub fn release_blobs(&self) {
        release(self.state());
    }

    /// Waits `delay` before answering each request (before the headers): for header timeouts.
    pub fn delay_responses(&self, delay: Option<Duration>) {
        *lock(&self.state().response_delay) = delay;
    }

    /// Blob GETs answer `307` to the CDN, with a signed-looking URL.
    pub fn redirect_blobs_to(&self, cdn: &FakeCdn) {
        *lock(&self.state().redirect_blobs_to) = Some(cdn.url());
    }

    /// Starts a CDN serving this registry's blobs at `/blobs/<digest>`.
    pub async fn start_cdn(&self) -> FakeCdn {
        let origin = self.server.state.clone();
        FakeCdn {
            server: Server::start(Arc::new(State::new(Role::Cdn { origin })), None).await,
        }
    }

    /// Stops listening and closes every open connection; the port stays reserved for
    /// [`FakeRegistry::restart`].
    pub async fn stop(&self) {
        self.server.stop().await;
    }

    /// Listens again on the same port, with the same content and settings.
    pub async fn restart(&self) {
        self.server.restart().await;
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state().log).clone()
    }

    /// Requests with `method` (`"GET"`, `"HEAD"`…) whose path contains `path_contains`.
    pub fn requests_matching(&self, method: &str, path_contains: &str) -> Vec<RecordedRequest> {
        matching(self.state(), method, path_contains)
    }

    /// Forgets the request log (counters of bytes and tokens stay).
    pub fn clear_requests(&self) {
        lock(&self.state().log).clear();
    }

    /// Bytes of blob bodies handed to the network so far.
    pub fn blob_bytes_sent(&self) -> u64 {
        self.state().blob_bytes_sent.load(Ordering::SeqCst)
    }
}

/// A fake blob CDN: serves its registry's blobs at `/blobs/<digest>` (any query accepted), and
/// answers 403 to any request carrying `Authorization`, counting those.
pub struct FakeCdn {
    server: Server,
}

impl FakeCdn {
    pub fn host(&self) -> String {
        self.server.addr.to_string()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Requests the CDN refused because they carried `Authorization`.
    pub fn rejected_with_authorization(&self) -> usize {
        self.server.state.cdn_rejected.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.server.state.log).clone()
    }

    pub fn requests_matching(&self, method: &str, path_contains: &str) -> Vec<RecordedRequest> {
        matching(&self.server.state, method, path_contains)
    }

    pub fn blob_bytes_sent(&self) -> u64 {
        self.server.state.blob_bytes_sent.load(Ordering::SeqCst)
    }

    pub fn throttle_blobs(&self, bytes_per_second: Option<u64>) {
        throttle(&self.server.state, bytes_per_second);
    }

    pub async fn stop(&self) {
        self.server.stop().await;
    }
}

fn matching(state: &State, method: &str, path_contains: &str) -> Vec<RecordedRequest> {
    lock(&state.log)
        .iter()
        .filter(|r| {
            r.method.as_str().eq_ignore_ascii_case(method) && r.path.contains(path_contains)
        })
        .cloned()
        .collect()
}

fn throttle(state: &State, bytes_per_second: Option<u64>) {
    *lock(&state.throttle) = bytes_per_second.filter(|b| *b > 0);
}

fn release(state: &State) {
    *lock(&state.stall_after) = None;
    state.release.send_modify(|generation| *generation += 1);
}

fn realm(state: &State) -> String {
    let host = lock(&state.realm_host)
        .clone()
        .unwrap_or_else(|| lock(&state.addr).to_string());
    let scheme = if state.https.load(Ordering::SeqCst) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}/token")
}

fn pseudo_random_block(len: usize, seed: u64) -> Bytes {
    // xorshift64*: deterministic, fast, good enough to defeat compression.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

// ---- request handling ----

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<FakeBody> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    lock(&state.log).push(RecordedRequest {
        version: req.version(),
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        headers: req.headers().clone(),
    });
    let delay = *lock(&state.response_delay);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let headers = req.headers();
    if let Role::Cdn { origin } = &state.role {
        return cdn(&state, origin, &method, &path, headers);
    }
    if path == "/token" {
        return token_endpoint(&state, query.as_deref(), headers);
    }
    if !path.starts_with("/v2/") {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint");
    }
    if let Some(resp) = canned(&state) {
        return resp;
    }
    if let Some(resp) = check_auth(&state, &path, headers) {
        return resp;
    }
    if method != Method::GET && method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the fake registry is read-only",
        );
    }
    let head = method == Method::HEAD;
    if path == "/v2/" {
        return json(StatusCode::OK, "{}".into());
    }
    let rest = &path["/v2/".len()..];
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        if let Some(body) = lock(&state.tags_body).clone() {
            return json(StatusCode::OK, body);
        }
        return tags_list(&state, repo, query.as_deref());
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return manifest(&state, repo, reference, headers, head);
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        return blob(&state, repo, digest, headers, head);
    }
    if let Some((repo, digest)) = rest.rsplit_once("/referrers/") {
        return referrers(&state, repo, digest);
    }
    error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "unknown path")
}

trait WithContentType {
    fn with_content_type(self, ct: &str) -> Self;
}

impl WithContentType for Response<FakeBody> {
    fn with_content_type(mut self, ct: &str) -> Self {
        self.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        self
    }
}

fn canned(state: &State) -> Option<Response<FakeBody>> {
    let mut canned = lock(&state.canned);
    let c = canned.as_mut()?;
    if c.remaining == 0 {
        *canned = None;
        return None;
    }
    c.remaining -= 1;
    let mut resp = error(c.status, "TOOMANYREQUESTS", "canned failure");
    if let Some(secs) = c.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(resp)
}

fn check_auth(state: &State, path: &str, headers: &HeaderMap) -> Option<Response<FakeBody>> {
    let auth = lock(&state.auth).clone();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth {
        Auth::None => None,
        Auth::Basic { username, password } => {
            if given == Some(basic_value(&username, &password).as_str()) {
                return None;
            }
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="fake registry""#),
            );
            Some(resp)
        }
        Auth::Bearer { .. } => {
            let token = given.and_then(|g| g.strip_prefix("Bearer "));
            let valid = !state.refuse_tokens.load(Ordering::SeqCst)
                && token.is_some_and(|t| {
                    lock(&state.issued_tokens)
                        .get(t)
                        .is_some_and(|expiry| Instant::now() < *expiry)
                });
            if valid {
                return None;
            }
            let scope = path
                .strip_prefix("/v2/")
                .and_then(|rest| {
                    ["/manifests/", "/blobs/", "/tags/list", "/referrers/"]
                        .iter()
                        .find_map(|m| rest.rsplit_once(m).map(|(repo, _)| repo))
                })
                .map(|repo| format!(r#",scope="repository:{repo}:pull""#))
                .unwrap_or_default();
            let challenge = format!(
                r#"Bearer realm="{}",service="{SERVICE}"{scope}"#,
                realm(state)
            );
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&challenge).unwrap(),
            );
            Some(resp)
        }
    }
}

fn basic_value(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}

fn token_endpoint(state: &State, _query: Option<&str>, headers: &HeaderMap) -> Response<FakeBody> {
    state.token_fetches.fetch_add(1, Ordering::SeqCst);
    let Auth::Bearer {
        credentials,
        expires_in,
    } = lock(&state.auth).clone()
    else {
        return error(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "tokens are not enabled",
        );
    };
    if let Some((username, password)) = credentials {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(basic_value(&username, &password).as_str()) {
            return error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "bad credentials");
        }
    }
    let n = state.tokens_issued.fetch_add(1, Ordering::SeqCst);
    let token = format!("fake-token-{n}");
    lock(&state.issued_tokens).insert(
        token.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    json(
        StatusCode::OK,
        format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":{expires_in}}}"#)
            .into(),
    )
}

fn tags_list(state: &State, repo: &str, query: Option<&str>) -> Response<FakeBody> {
    let repos = lock(&state.repos);
    let Some(r) = repos.get(repo) else {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        );
    };
    let params = parse_query(query);
    let last = params.get("last");
    let n: Option<usize> = params
        .get("n")
        .and_then(|n| n.parse().ok())
        .or(*lock(&state.tag_page_size));
    let all: Vec<&String> = r
        .tags
        .keys()
        .filter(|t| last.is_none_or(|l| t.as_str() > l.as_str()))
        .collect();
    let page: Vec<&String> = match n {
        Some(n) => all.iter().take(n).copied().collect(),
        None => all.clone(),
    };
    let body = serde_json::json!({ "name": repo, "tags": page }).to_string();
    let mut resp = json(StatusCode::OK, body.into());
    if let (Some(n), Some(last_shown)) = (n, page.last()) {
        if all.len() > page.len() {
            let link = format!("</v2/{repo}/tags/list?last={last_shown}&n={n}>; rel=\"next\"");
            resp.headers_mut()
                .insert(header::LINK, HeaderValue::from_str(&link).unwrap());
        }
    }
    resp
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The digest of the linux/amd64 entry of an index's bytes, if they are an index with one.
fn linux_amd64(index: &[u8]) -> Option<Digest> {
    let index: serde_json::Value = serde_json::from_slice(index).ok()?;
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == "amd64")
        .and_then(|m| m["digest"].as_str()?.parse().ok())
}

fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .any(|t| t == media_type || t == "*/*")
}

fn manifest(
    state: &State,
    repo: &str,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response<FakeBody> {
    let repos = lock(&state.repos);
    let Some(r) = repos.get(repo) else {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        );
    };
    let digest = match reference.parse::<Digest>() {
        Ok(d) => Some(d),
        Err(_) => r.tags.get(reference).cloned(),
    };
    let Some((mut digest, mut m)) = digest.and_then(|d| r.manifests.get(&d).map(|m| (d, m))) else {
        return error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        );
    };
    // A tag on an index, asked for by a client that takes no index: the linux/amd64 manifest,
    // as Distribution and Docker Hub answer it.
    if reference.parse::<Digest>().is_err() && !accepts(headers, &m.media_type) {
        if let Some(picked) =
            linux_amd64(&m.bytes).and_then(|d| r.manifests.get(&d).map(|p| (d, p)))
        {
            (digest, m) = picked;
        }
    }
    // A manifest added with an empty media type is served without a `Content-Type`, as some
    // registries do: the client must take the type from the manifest itself.
    if !m.media_type.is_empty() && !accepts(headers, &m.media_type) {
        return error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            &format!(
                "manifest is {}, which the Accept header does not list",
                m.media_type
            ),
        );
    }
    let mut resp = Response::new(if head {
        FakeBody::empty()
    } else {
        FakeBody::full(m.bytes.clone())
    });
    let h = resp.headers_mut();
    if !m.media_type.is_empty() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&m.media_type).unwrap(),
        );
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.bytes.len()));
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest.to_string()).unwrap(),
    );
    resp
}

fn blob(
    state: &State,
    repo: &str,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Response<FakeBody> {
    let Ok(digest) = digest.parse::<Digest>() else {
        return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
    };
    let content = lock(&state.repos)
        .get(repo)
        .and_then(|r| r.blobs.get(&digest).cloned());
    let Some(content) = content else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        );
    };
    if !head {
        let redirect = lock(&state.redirect_blobs_to).clone();
        if let Some(cdn) = redirect {
            let mut resp = Response::new(FakeBody::empty());
            *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
            let location = format!("{cdn}/blobs/{digest}?signature=fake-signed-url&expires=60");
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
            return resp;
        }
    }
    let corrupt = lock(&state.corrupt).contains(&digest);
    serve_blob(state, &digest, content, headers, head, corrupt)
}

/// Serves a blob body (with `Range`), streaming it chunk by chunk through a bounded channel.
fn serve_blob(
    state: &State,
    digest: &Digest,
    content: Content,
    headers: &HeaderMap,
    head: bool,
    corrupt: bool,
) -> Response<FakeBody> {
    let total = content.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, total));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, total),
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(None) => {
            let mut resp = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_INVALID",
                "range not satisfiable",
            );
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{total}")).unwrap(),
            );
            return resp;
        }
    };
    let body = if head || start == end {
        FakeBody::empty()
    } else {
        stream_blob(state, content, start, end, corrupt)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if !(state.chunked_blobs.load(Ordering::SeqCst) && status == StatusCode::OK) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest.to_string()).unwrap(),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {}-{}/{total}", start, end - 1)).unwrap(),
        );
    }
    resp
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → `[start, end)`; `None` when unsatisfiable.
fn parse_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (total.saturating_sub(n), total)
        }
        (a, "") => (a.parse().ok()?, total),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.saturating_add(1).min(total),
        ),
    };
    (start < end && start < total).then_some((start, end))
}

fn stream_blob(state: &State, content: Content, start: u64, end: u64, corrupt: bool) -> FakeBody {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let throttle = *lock(&state.throttle);
    let mut stall = *lock(&state.stall_after);
    let mut released = state.release.subscribe();
    let counter = state.blob_bytes_sent.clone();
    tokio::spawn(async move {
        let chunk_max = match throttle {
            Some(bps) => ((bps / 10).max(1) as usize).min(64 * 1024),
            None => 64 * 1024,
        };
        let mut offset = start;
        let mut sent = 0u64;
        while offset < end {
            let mut max = chunk_max;
            if let Some(limit) = stall {
                if sent >= limit {
                    let _ = released.changed().await;
                    stall = None;
                    continue;
                }
                max = max.min((limit - sent) as usize);
            }
            let mut chunk = content.chunk_at(offset, end, max);
            if corrupt && offset == 0 {
                let mut v = chunk.to_vec();
                v[0] ^= 0xff;
                chunk = Bytes::from(v);
            }
            let n = chunk.len() as u64;
            if tx.send(chunk).await.is_err() {
                return;
            }
            counter.fetch_add(n, Ordering::SeqCst);
            offset += n;
            sent += n;
            if let Some(bps) = throttle {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / bps as f64)).await;
            }
        }
    });
    FakeBody::Channel(rx)
}

fn cdn(
    state: &State,
    origin: &Arc<State>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Response<FakeBody> {
    if headers.contains_key(header::AUTHORIZATION) {
        state.cdn_rejected.fetch_add(1, Ordering::SeqCst);
        return error(
            StatusCode::FORBIDDEN,
            "DENIED",
            "the CDN refuses requests that carry Authorization",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "read-only CDN",
        );
    }
    let Some(digest) = path
        .strip_prefix("/blobs/")
        .and_then(|d| d.parse::<Digest>().ok())
    else {
        return error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", "unknown CDN path");
    };
    let content = lock(&origin.repos)
        .values()
        .find_map(|r| r.blobs.get(&digest).cloned());
    let Some(content) = content else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to the CDN",
        );
    };
    let corrupt = lock(&origin.corrupt).contains(&digest);
    serve_blob(
        state,
        &digest,
        content,
        headers,
        *method == Method::HEAD,
        corrupt,
    )
}

fn json(status: StatusCode, body: Bytes) -> Response<FakeBody> {
    let mut resp = Response::new(FakeBody::full(body.clone()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    resp
}

/// An OCI error body `{"errors":[{"code","message","detail"}]}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response<FakeBody> {
    let body = serde_json::json!({
        "errors": [{ "code": code, "message": message, "detail": null }]
    })
    .to_string();
    json(status, body.into())
}

/// The fake's response body: whole, empty, or streamed from a sending task.
pub enum FakeBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl FakeBody {
    fn full(b: Bytes) -> FakeBody {
        FakeBody::Full(Some(b))
    }

    fn empty() -> FakeBody {
        FakeBody::Full(None)
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            FakeBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FakeBody::Channel(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, FakeBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FakeBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            FakeBody::Full(None) => SizeHint::with_exact(0),
            FakeBody::Channel(_) => SizeHint::default(),
        }
    }
}

/// The referrers API: every manifest of `repo` whose `subject` is `digest`, as descriptors
/// with their `artifactType` and annotations (no filtering: outpost asks unfiltered).
fn referrers(state: &State, repo: &str, digest: &str) -> Response<FakeBody> {
    if !state.referrers_api.load(Ordering::SeqCst) {
        let body = Bytes::from_static(b"404 page not found\n");
        return json(StatusCode::NOT_FOUND, body).with_content_type("text/plain; charset=utf-8");
    }
    let repos = lock(&state.repos);
    let Some(r) = repos.get(repo) else {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        );
    };
    let mut descriptors: Vec<(String, serde_json::Value)> = r
        .manifests
        .iter()
        .filter_map(|(d, m)| {
            let json: serde_json::Value = serde_json::from_slice(&m.bytes).ok()?;
            (json["subject"]["digest"].as_str()? == digest).then(|| {
                let artifact_type = json["artifactType"]
                    .as_str()
                    .or(json["config"]["mediaType"].as_str())
                    .unwrap_or_default();
                let mut descriptor = serde_json::json!({
                    "mediaType": m.media_type,
                    "digest": d.to_string(),
                    "size": m.bytes.len(),
                    "artifactType": artifact_type,
                });
                if let Some(annotations) = json.get("annotations") {
                    descriptor["annotations"] = annotations.clone();
                }
                (d.to_string(), descriptor)
            })
        })
        .collect();
    descriptors.sort_by(|a, b| a.0.cmp(&b.0));
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descriptors.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
    });
    json(StatusCode::OK, body.to_string().into()).with_content_type(OCI_INDEX)
}
