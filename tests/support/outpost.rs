//! outpost in-process for black-box tests: [`Outpost::start`] serves a [`Config`] on
//! `127.0.0.1:<free port>` with a fresh data dir, and [`Client`] talks to it like curl would.

use std::time::Duration;

use bytes::Bytes;
use config::{Config, ExternalRegistry};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
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
    /// Serves `config` on a free loopback port with a fresh data dir.
    pub async fn start(mut config: Config) -> Outpost {
        let data_dir = tempfile::tempdir().expect("temp dir");
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = data_dir.path().to_owned();
        let running = server::start(config).await.expect("outpost starts");
        Outpost { running, data_dir }
    }

    /// `http://127.0.0.1:<port>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
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
        let response = self
            .inner
            .request(Self::request(Method::GET, url, headers))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let (parts, mut body) = response.into_parts();
        let mut hasher = Hasher::new(oci::Algorithm::Sha256);
        let mut len = 0u64;
        let result = loop {
            match body.frame().await {
                None => break Ok((hasher.finish(), len)),
                Some(Err(e)) => break Err(e.to_string()),
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        hasher.update(data);
                        len += data.len() as u64;
                    }
                }
            }
        };
        Streamed {
            status: parts.status,
            headers: parts.headers,
            body: result,
        }
    }
}
