//! An in-process HTTP proxy for black-box tests, as a site's squid would behave: `CONNECT
//! host:port` tunnels (HTTPS upstreams) and absolute-form requests forwarded in origin form
//! without `Proxy-Authorization` (plain-HTTP upstreams), optional Basic proxy credentials
//! (`407` with `Proxy-Authenticate` otherwise), tunnels refused to chosen hosts (`403`), and
//! every request recorded with the credentials it carried.
//!
//! ```text
//! let proxy = FakeProxy::start().await;
//! proxy.require_credentials("edge", "s3cret");
//! // ... outpost with stylus.site.network.httpsProxy = proxy.url_with("edge", "s3cret") ...
//! assert!(proxy.requests().iter().any(|r| r.method == "CONNECT"));
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

type Body = BoxBody<Bytes, hyper::Error>;

/// One request the proxy received.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    /// `CONNECT`, `GET`, `HEAD`, …
    pub method: String,
    /// `host:port` for `CONNECT`; the absolute URI otherwise.
    pub target: String,
    /// The `Proxy-Authorization` header it carried.
    pub proxy_authorization: Option<String>,
    /// The status the proxy answered (for `CONNECT`: before the tunnel).
    pub status: u16,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<ProxyRequest>>,
    /// `Basic …` the proxy requires, when set.
    credentials: Mutex<Option<String>>,
    /// The status for credentials that are present but wrong (407; tinyproxy 1.11 sends 401).
    wrong_credentials: Mutex<Option<StatusCode>>,
    /// Hosts (`host:port` or host) that CONNECT is refused to.
    refused: Mutex<Vec<String>>,
    /// Every connection and tunnel, aborted by [`FakeProxy::stop`].
    tasks: Mutex<Vec<AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The proxy. Dropping it stops it.
pub struct FakeProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl FakeProxy {
    /// Starts a proxy on `127.0.0.1:<free port>` that needs no credentials.
    pub async fn start() -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State::default());
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        FakeProxy {
            addr,
            state,
            accept: Mutex::new(Some(accept)),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:<port>` (both percent-encoded).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        let enc = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        format!("http://{}:{}@{}", enc(user), enc(password), self.addr)
    }

    /// From now on, answer `407` unless a request carries these Basic credentials.
    pub fn require_credentials(&self, user: &str, password: &str) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *lock(&self.state.credentials) = Some(format!("Basic {token}"));
    }

    /// Answer credentials that are present but wrong with `status` instead of 407 (tinyproxy
    /// 1.11 answers them with `401 Unauthorized`).
    pub fn answer_wrong_credentials_with(&self, status: StatusCode) {
        *lock(&self.state.wrong_credentials) = Some(status);
    }

    /// Refuse `CONNECT` to `host` (`host:port`, or a host name for any port) with `403`.
    pub fn refuse_connect_to(&self, host: &str) {
        lock(&self.state.refused).push(host.to_owned());
    }

    pub fn requests(&self) -> Vec<ProxyRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }

    /// Stops listening and closes every connection and tunnel: the proxy is down.
    pub async fn stop(&self) {
        let task = lock(&self.accept).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        for task in lock(&self.state.tasks).drain(..) {
            task.abort();
        }
    }
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.accept).take() {
            task.abort();
        }
        for task in lock(&self.state.tasks).drain(..) {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state2 = state.clone();
        let client = client.clone();
        let task = tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state2.clone();
                let client = client.clone();
                async move { Ok::<_, Infallible>(handle(state, client, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
        let mut tasks = lock(&state.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|e| match e {}).boxed());
    *response.status_mut() = status;
    response
}

async fn handle(
    state: Arc<State>,
    client: Client<HttpConnector, Incoming>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let auth = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let target = if req.method() == Method::CONNECT {
        req.uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default()
    } else {
        req.uri().to_string()
    };
    let method = req.method().to_string();
    let record = |status: StatusCode| {
        lock(&state.requests).push(ProxyRequest {
            method: method.clone(),
            target: target.clone(),
            proxy_authorization: auth.clone(),
            status: status.as_u16(),
        });
    };

    let required = lock(&state.credentials).clone();
    if required.is_some() && auth != required {
        let status = match (&auth, *lock(&state.wrong_credentials)) {
            (Some(_), Some(status)) => status,
            _ => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        };
        record(status);
        let mut response = empty(status);
        response.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"fake proxy\""),
        );
        return response;
    }

    if req.method() == Method::CONNECT {
        let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
        let refused = lock(&state.refused)
            .iter()
            .any(|r| *r == target || r == host);
        if refused {
            record(StatusCode::FORBIDDEN);
            return empty(StatusCode::FORBIDDEN);
        }
        let upstream = match TcpStream::connect(&target).await {
            Ok(s) => s,
            Err(_) => {
                record(StatusCode::BAD_GATEWAY);
                return empty(StatusCode::BAD_GATEWAY);
            }
        };
        record(StatusCode::OK);
        let upgrade = hyper::upgrade::on(req);
        let tunnel = tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
        lock(&state.tasks).push(tunnel.abort_handle());
        return empty(StatusCode::OK);
    }

    // An absolute-form request: forward it in origin form, without the proxy's headers.
    if req.uri().authority().is_none() {
        record(StatusCode::BAD_REQUEST);
        return empty(StatusCode::BAD_REQUEST);
    }
    req.headers_mut().remove(header::PROXY_AUTHORIZATION);
    req.headers_mut().remove("proxy-connection");
    match client.request(req).await {
        Ok(response) => {
            record(response.status());
            response.map(|b| b.boxed())
        }
        Err(_) => {
            record(StatusCode::BAD_GATEWAY);
            empty(StatusCode::BAD_GATEWAY)
        }
    }
}
