//! Loading a server certificate: a PEM chain and its private key, checked before use.
//!
//! Checks, in order, each failing with the file it concerns: the certificate file holds a
//! certificate; the key file holds a PKCS#8, PKCS#1 or SEC1 key that rustls can sign with; the key
//! belongs to the first certificate; that certificate is valid now.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;

use crate::CertsError;

/// Reads and checks `cert` (PEM chain, server certificate first) and `key` (its private key).
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertsError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = certificates(cert, &cert_pem)?;
    let key_der = private_key(key, &key_pem)?;

    let (_, parsed) = x509_parser::parse_x509_certificate(chain[0].as_ref()).map_err(|e| {
        CertsError::BadCertificate {
            path: cert.to_path_buf(),
            detail: e.to_string(),
        }
    })?;

    let signing_key = crate::crypto_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| CertsError::BadKey {
            path: key.to_path_buf(),
            detail: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertsError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => {
            return Err(CertsError::BadCertificate {
                path: cert.to_path_buf(),
                detail: e.to_string(),
            })
        }
    }
    check_validity(cert, &parsed, SystemTime::now())?;
    Ok(Arc::new(certified))
}

fn read(path: &Path) -> Result<Vec<u8>, CertsError> {
    std::fs::read(path).map_err(|source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in file order; at least one.
pub(crate) fn certificates(
    path: &Path,
    pem_bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CertsError> {
    let chain = CertificateDer::pem_slice_iter(pem_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, e))?;
    if chain.is_empty() {
        return Err(CertsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn private_key(path: &Path, pem_bytes: &[u8]) -> Result<PrivateKeyDer<'static>, CertsError> {
    match PrivateKeyDer::from_pem_slice(pem_bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(CertsError::NoKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(bad_pem(path, e)),
    }
}

fn bad_pem(path: &Path, error: pem::Error) -> CertsError {
    // The PEM error may quote a line of the file; for a key file that could be key material, so
    // only the kind of error is kept.
    let detail = match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "unreadable PEM",
    };
    CertsError::BadPem {
        path: path.to_path_buf(),
        detail: detail.to_owned(),
    }
}

/// Fails when `now` is outside the certificate's validity period.
pub(crate) fn check_validity(
    path: &Path,
    cert: &X509Certificate<'_>,
    now: SystemTime,
) -> Result<(), CertsError> {
    let validity = cert.validity();
    let not_before = to_system_time(validity.not_before.timestamp());
    let not_after = to_system_time(validity.not_after.timestamp());
    if now < not_before {
        return Err(CertsError::NotYetValid {
            path: path.to_path_buf(),
            not_before,
        });
    }
    if now > not_after {
        return Err(CertsError::Expired {
            path: path.to_path_buf(),
            not_after,
        });
    }
    Ok(())
}

fn to_system_time(unix_seconds: i64) -> SystemTime {
    if unix_seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix_seconds.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs())
    }
}
