//! Every way making or loading TLS material can fail, each naming the file and the fix.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

/// A failure of the `certs` crate. Messages name the file concerned and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("{}: no certificate found: expected a PEM `-----BEGIN CERTIFICATE-----` block (is this the key file?)", path.display())]
    NoCertificate { path: PathBuf },

    #[error("{}: no private key found: expected a PEM `BEGIN PRIVATE KEY` (PKCS#8), `BEGIN RSA PRIVATE KEY` (PKCS#1) or `BEGIN EC PRIVATE KEY` (SEC1) block (is this the certificate file?)", path.display())]
    NoKey { path: PathBuf },

    #[error("{}: malformed PEM: {detail}", path.display())]
    BadPem { path: PathBuf, detail: String },

    #[error("{}: the private key cannot be used: {detail}", path.display())]
    BadKey { path: PathBuf, detail: String },

    #[error("{}: not a valid X.509 certificate: {detail}", path.display())]
    BadCertificate { path: PathBuf, detail: String },

    #[error("the key in {} does not match the certificate in {}: give the key file that belongs to this certificate", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    #[error("{}: the certificate expired at {}: make a new one with `outpost certs generate`", path.display(), Rfc3339(*not_after))]
    Expired {
        path: PathBuf,
        not_after: SystemTime,
    },

    #[error("{}: the certificate is not valid before {}: check this machine's clock", path.display(), Rfc3339(*not_before))]
    NotYetValid {
        path: PathBuf,
        not_before: SystemTime,
    },

    #[error(
        "refusing to overwrite {}: pass --force to replace them",
        PathList(files)
    )]
    WouldOverwrite { files: Vec<PathBuf> },

    #[error("{} exists but {} does not: a CA needs both files to issue a server certificate; restore the missing file or pass --force to make a new CA", present.display(), missing.display())]
    IncompleteCa { present: PathBuf, missing: PathBuf },

    #[error("{}: cannot reuse this CA: {detail}; pass --force to make a new CA", path.display())]
    UnusableCa { path: PathBuf, detail: String },

    #[error("invalid subject alternative name {value:?}: expected a DNS name (`registry.local`) or an IP address (`10.0.0.5`)")]
    InvalidSan { value: String },

    #[error("invalid validity of {days} days: give --days between 1 and {max}", max = crate::generate::MAX_DAYS)]
    InvalidDays { days: u32 },

    #[error("cannot create the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },

    #[error("invalid client name {name:?}: use letters, digits, `.`, `_` and `-` (it names the files NAME.pem and NAME-key.pem)")]
    InvalidClientName { name: String },

    #[error("no CA in {}: run `outpost certs generate --dir {}` first, then issue client certificates from its CA", dir.display(), dir.display())]
    NoCa { dir: std::path::PathBuf },

    #[error("{}: no CA certificate could be used to check clients: {detail}", path.display())]
    ClientCa {
        path: std::path::PathBuf,
        detail: String,
    },

    #[error("cannot build the TLS server configuration: {0}")]
    ServerConfig(rustls::Error),
}

struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_seconds(self.0))
    }
}

struct PathList<'a>(&'a [PathBuf]);

impl fmt::Display for PathList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, path) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", path.display())?;
        }
        Ok(())
    }
}
