//! outpost in-process for black-box tests: [`Outpost::start`] serves a [`Config`] on
//! `127.0.0.1:<free port>` with a fresh data dir, and [`Client`] talks to it like curl would.

use std::time::Duration;

use bytes::Bytes;
use config::{Config, ExternalRegistry};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use oci::{Credentials, Secret};
use oci::{Digest, Hasher};
use server::Running;

/// A running outpost; stops when dropped.
pub struct Outpost {
    pub running: Running,
    pub data_dir: tempfile::TempDir,
}

impl Outpost {
    /// Serves `config` on a free loopback port with a fresh data dir. A `cache.minFree` left at
    /// its default becomes 0: the temp dir shares its file system with the build, and what a
    /// test stores must not depend on how full the machine's disk is (the default reserve, up
    /// to 1 GiB, would pass blobs through unstored on a nearly full CI disk).
    pub async fn start(mut config: Config) -> Outpost {
        let data_dir = tempfile::tempdir().expect("temp dir");
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = data_dir.path().to_owned();
        no_disk_reserve(&mut config);
        let running = server::start(config).await.expect("outpost starts");
        Outpost { running, data_dir }
    }

    /// `http://127.0.0.1:<port>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
    }

    /// The value of the unlabelled sample `name` (e.g. `outpost_fills_in_flight`) on outpost's
    /// `/metrics`; panics when there is no such sample.
    /// Blob files in the store's `blobs/` tree now (the store's documented on-disk layout).
    pub fn stored_blobs(&self) -> usize {
        let blobs = self.data_dir.path().join("blobs");
        let mut count = 0;
        for algorithm in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
            for prefix in std::fs::read_dir(algorithm.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                count += std::fs::read_dir(prefix.path())
                    .into_iter()
                    .flatten()
                    .count();
            }
        }
        count
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let url = self.url("/metrics");
        let reply = Client::new().get(&url).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}");
        let text = String::from_utf8_lossy(&reply.body);
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in {url}:\n{text}"))
    }
}

/// A configuration whose external registry (`registryCredentials`) is `host` under `prefix`.
pub fn external_config(host: &str, prefix: &str, credentials: Option<(&str, &str)>) -> Config {
    Config {
        registry_credentials: Some(ExternalRegistry {
            host: oci::Registry::parse(host).expect("a registry host"),
            prefix: prefix.to_owned(),
            credentials: credentials.map(|(u, p)| Credentials {
                username: u.to_owned(),
                password: Secret::new(p),
            }),
            certificates: Vec::new(),
            insecure: true,
        }),
        ..Config::default()
    }
}

/// A configuration with its store in `dir`, for the in-process commands (prefetch, export,
/// import); no disk reserve, as in [`Outpost::start`].
pub fn config_in(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    no_disk_reserve(&mut config);
    config
}

/// A `cache.minFree` left at its default becomes 0 (see [`Outpost::start`]).
fn no_disk_reserve(config: &mut Config) {
    if config.cache.min_free == config::Reserve::Default {
        config.cache.min_free = config::Reserve::Bytes(0);
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The OCI error code of an error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no OCI error code in {:?}", self.body))
            .to_owned()
    }

    pub fn error_message(&self) -> String {
        self.json()["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn digest(&self) -> Digest {
        Digest::compute(oci::Algorithm::Sha256, &self.body)
    }
}

/// The result of streaming a body through a hasher without keeping it.
#[derive(Debug)]
pub struct Streamed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The digest and length of what arrived, or the error that ended the body.
    pub body: Result<(Digest, u64), String>,
}

/// A plain HTTP/1.1 client, like curl.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Empty<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        Client {
            inner: HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(5))
                .build_http(),
        }
    }

    fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Empty::new()).expect("valid request")
    }

    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
        let response = self
            .inner
            .request(Self::request(method, url, headers))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{url}: body: {e}"))
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Method::GET, url, &[]).await
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, url, headers).await
    }

    pub async fn head(&self, url: &str) -> Reply {
        self.send(Method::HEAD, url, &[]).await
    }

    /// GETs `url` and hashes the body as it arrives (sha256), never holding it whole.
    pub async fn stream(&self, url: &str, headers: &[(&str, &str)]) -> Streamed {
        self.open(url, headers).await.finish().await
    }

    /// GETs `url` and returns once the response headers have arrived, with the body still to
    /// read: for tests that act between the headers and the end of the body.
    pub async fn open(&self, url: &str, headers: &[(&str, &str)]) -> Opened {
        let response = self
            .inner
            .request(Self::request(Method::GET, url, headers))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let (parts, body) = response.into_parts();
        Opened {
            status: parts.status,
            headers: parts.headers,
            body,
            hasher: Hasher::new(oci::Algorithm::Sha256),
            received: 0,
        }
    }
}

/// A response whose headers have arrived, its body being read and hashed (see [`Client::open`]).
/// Dropping it hangs up.
pub struct Opened {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: Incoming,
    hasher: Hasher,
    received: u64,
}

impl Opened {
    /// The next frame: `Ok(false)` at the end of the body.
    async fn next(&mut self) -> Result<bool, String> {
        match self.body.frame().await {
            None => Ok(false),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    self.hasher.update(data);
                    self.received += data.len() as u64;
                }
                Ok(true)
            }
        }
    }

    /// Reads until at least `n` body bytes have arrived in all; `Err` if the body ends or breaks
    /// before.
    pub async fn read_at_least(&mut self, n: u64) -> Result<u64, String> {
        while self.received < n {
            if !self.next().await? {
                return Err(format!(
                    "the body ended after {} bytes, before {n}",
                    self.received
                ));
            }
        }
        Ok(self.received)
    }

    /// Reads the rest of the body: the digest and length of the whole body, or its error.
    pub async fn finish(mut self) -> Streamed {
        let body = loop {
            match self.next().await {
                Ok(true) => {}
                Ok(false) => break Ok((self.hasher.finish(), self.received)),
                Err(e) => break Err(e),
            }
        };
        Streamed {
            status: self.status,
            headers: self.headers,
            body,
        }
    }
}
