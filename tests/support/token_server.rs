//! A token server for Docker Distribution's `auth.token` (the Bearer flow of Docker Hub and
//! Harbor) on a loopback address of its own, e.g. `127.0.0.2`: a token realm on a second host.
//!
//! Anonymous `GET /token?service=S&scope=repository:NAME:pull` gets a JWT (ES256) granting
//! `pull` on each repository asked for. The signing key's self-signed certificate travels in the
//! token's `x5c` header and is the `rootcertbundle` Distribution trusts
//! ([`TokenServer::distribution_auth`] writes that part of its configuration). One thread serves
//! one request per connection; it stops when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

const SERVICE: &str = "outpost-e2e";
const ISSUER: &str = "outpost-e2e-tokens";

pub struct TokenServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    rng: SystemRandom,
}

impl TokenServer {
    /// Starts on `ip` (a loopback address such as `127.0.0.2`) and a free port.
    pub fn start(ip: &str) -> TokenServer {
        let listener = TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("bind {ip}:0 for the token server: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();

        let key = rcgen::KeyPair::generate().expect("a P-256 key");
        let params = rcgen::CertificateParams::new(vec![ISSUER.to_owned()]).unwrap();
        let cert = params.self_signed(&key).expect("a self-signed certificate");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), cert.pem()).unwrap();
        let rng = SystemRandom::new();
        let signer = Signer {
            key: EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &key.serialize_der(),
                &rng,
            )
            .expect("ring reads rcgen's PKCS#8 key"),
            cert_der: cert.der().to_vec(),
            rng,
        };

        let issued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (issued, stop) = (issued.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if serve(stream, &signer) {
                                issued.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        TokenServer {
            addr,
            dir,
            issued,
            stop,
            thread: Some(thread),
        }
    }

    /// `IP:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://IP:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// The `auth:` section of a Distribution configuration that trusts this server.
    pub fn distribution_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm(),
            self.root_pem().display()
        )
    }

    fn root_pem(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Answers one request; `true` when a token was issued.
fn serve(mut stream: TcpStream, signer: &Signer) -> bool {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default();
    // An absolute-form target (through a proxy that forwards it as is) has the path after the host.
    let path = target.split_once("://").map_or(target, |(_, rest)| {
        rest.find('/').map_or("/", |i| &rest[i..])
    });
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    if route != "/token" {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return false;
    }
    let repositories: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(|scope| {
            percent_encoding::percent_decode_str(scope)
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter_map(|scope| {
            let mut parts = scope.split(':');
            match (parts.next(), parts.next()) {
                (Some("repository"), Some(name)) => Some(name.to_owned()),
                _ => None,
            }
        })
        .collect();
    let token = sign(signer, &repositories);
    let body = format!(r#"{{"token":"{token}","access_token":"{token}","expires_in":300}}"#);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).is_ok()
}

/// A JWT granting `pull` on `repositories`, signed ES256, the certificate in `x5c`.
fn sign(signer: &Signer, repositories: &[String]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(&signer.cert_der)],
    });
    let access: Vec<_> = repositories
        .iter()
        .map(|name| serde_json::json!({"type": "repository", "name": name, "actions": ["pull"]}))
        .collect();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": "",
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", repositories.join(",")),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = signer
        .key
        .sign(&signer.rng, input.as_bytes())
        .expect("ES256 signing");
    format!("{input}.{}", b64url(signature.as_ref()))
}
