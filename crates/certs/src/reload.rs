//! [`ServerTls`]: the rustls server configuration whose certificate follows its files on disk.
//!
//! The configuration's certificate resolver hands every new handshake the certificate current at
//! that moment. Replacing it swaps one `Arc`; connections already established keep the session
//! they negotiated and are not touched. A certificate is only swapped in after it loaded and
//! passed every check of [`load_certified_key`]; a broken file leaves the old one in service.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;

use crate::{load_certified_key, CertsError};

/// A file modified less than this long before it was looked at may be modified again with the
/// same size and (coarse-grained) modification time; such stamps are not trusted ("racy git").
const RACY: Duration = Duration::from_secs(2);

/// ALPN protocols outpost offers, in preference order.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A server certificate and key loaded from two files, reloadable while serving.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    resolver: Arc<Resolver>,
    config: Arc<ServerConfig>,
    /// The files' metadata at the last load attempt, successful or not, so a timer calling
    /// [`ServerTls::reload_if_changed`] retries only after the files change again. `None` forces
    /// the next call to re-read (unknown, or modified too recently to trust, see [`RACY`]).
    seen: Mutex<Option<Stamps>>,
}

impl ServerTls {
    /// Loads and checks the certificate chain and key; fails as [`load_certified_key`] does.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<ServerTls, CertsError> {
        ServerTls::with_client_ca(cert, key, None)
    }

    /// [`ServerTls::new`], and with `client_ca` every client must present a certificate that
    /// CA (a PEM file of one or more CA certificates) signed: mutual TLS. A client without one,
    /// or with one from another CA, fails the handshake.
    pub fn with_client_ca(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        client_ca: Option<&Path>,
    ) -> Result<ServerTls, CertsError> {
        let cert_path = cert.into();
        let key_path = key.into();
        let stamps = Stamps::read_settled(&cert_path, &key_path);
        let certified = load_certified_key(&cert_path, &key_path)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(certified),
        });
        let builder = ServerConfig::builder_with_provider(crate::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(CertsError::ServerConfig)?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            cert_path,
            key_path,
            resolver,
            config: Arc::new(config),
            seen: Mutex::new(stamps),
        })
    }

    /// The rustls configuration to accept connections with (ring provider, TLS 1.2 and 1.3, ALPN
    /// `h2` and `http/1.1`). Always the same configuration; its resolver follows reloads.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Re-reads both files now (on SIGHUP, say). Returns `Ok(true)` when the certificate served
    /// to new handshakes changed, `Ok(false)` when the files hold the one already served. On error
    /// the previous certificate stays in service and the error says which file is wrong.
    pub fn reload(&self) -> Result<bool, CertsError> {
        let stamps = Stamps::read_settled(&self.cert_path, &self.key_path);
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        let certified = load_certified_key(&self.cert_path, &self.key_path)?;
        let mut current = self
            .resolver
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.cert == certified.cert {
            return Ok(false);
        }
        *current = certified;
        Ok(true)
    }

    /// [`reload`](Self::reload), but only when the files' size, modification time or inode
    /// changed since the last attempt: two `stat` calls otherwise, cheap enough for a timer.
    /// A failed reload is not retried until the files change again (files modified within the
    /// last two seconds are re-read on every call, as their metadata may not show a change yet).
    pub fn reload_if_changed(&self) -> Result<bool, CertsError> {
        let now = Stamps::read(&self.cert_path, &self.key_path);
        if now == *self.seen.lock().unwrap_or_else(PoisonError::into_inner) {
            return Ok(false);
        }
        self.reload()
    }

    /// The end-entity certificate new handshakes receive.
    pub fn current_certificate(&self) -> CertificateDer<'static> {
        self.resolver.get().cert[0].clone()
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

/// A verifier that accepts client certificates signed by the CAs in the PEM file `path`.
fn client_verifier(
    path: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, CertsError> {
    let unusable = |detail: String| CertsError::ClientCa {
        path: path.to_path_buf(),
        detail,
    };
    let pem = fs::read(path).map_err(|source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for der in crate::load::certificates(path, &pem)? {
        roots.add(der).map_err(|e| unusable(e.to_string()))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        crate::crypto_provider(),
    )
    .build()
    .map_err(|e| unusable(e.to_string()))
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Hands each handshake the current certificate.
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Resolver {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl fmt::Debug for Resolver {
    // The key is never printed, not even its type.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// What identifies one version of the two files without reading them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamps {
    cert: FileStamp,
    key: FileStamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamps {
    /// `None` when either file cannot be stat'ed (a reload then reports the real error).
    fn read(cert: &Path, key: &Path) -> Option<Stamps> {
        Some(Stamps {
            cert: FileStamp::read(cert)?,
            key: FileStamp::read(key)?,
        })
    }

    /// [`Stamps::read`], or `None` when a file was modified too recently for its metadata to
    /// tell a later change apart.
    fn read_settled(cert: &Path, key: &Path) -> Option<Stamps> {
        let now = SystemTime::now();
        let stamps = Stamps::read(cert, key)?;
        let settled = |f: &FileStamp| {
            f.modified
                .is_some_and(|m| now.duration_since(m).is_ok_and(|age| age >= RACY))
        };
        (settled(&stamps.cert) && settled(&stamps.key)).then_some(stamps)
    }
}

impl FileStamp {
    fn read(path: &Path) -> Option<FileStamp> {
        // Follows symlinks: a Kubernetes secret volume swaps a `..data` link, not the files.
        let meta = fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}
