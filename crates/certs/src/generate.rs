//! `outpost certs generate`: a CA and a server certificate signed by it, written into one
//! directory.
//!
//! ```text
//! DIR/
//!   ca.pem           the CA certificate: what clients (containerd) trust          0644
//!   ca-key.pem       the CA private key: only needed to issue server certificates  0600
//!   server.pem       the server certificate, then the CA certificate (a chain)    0644
//!   server-key.pem   the server private key                                       0600
//! ```
//!
//! Rules: nothing is overwritten without `force`; when `ca.pem` and `ca-key.pem` exist and the
//! server files do not, the existing CA issues the new server certificate (so clients that already
//! trust `ca.pem` keep working); with `force` everything is made anew.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::san::{default_sans, San};
use crate::CertsError;

/// The longest validity `generate` accepts, in days (about 100 years).
pub const MAX_DAYS: u32 = 36_500;

/// How far back `not_before` is set, so a peer whose clock is slightly behind accepts a
/// certificate made a moment ago.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// The four files in a certificate directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
        }
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct Generated {
    pub layout: Layout,
    /// The names in the server certificate.
    pub sans: Vec<San>,
    /// `true` when an existing CA issued the server certificate (the CA files were not touched).
    pub ca_reused: bool,
    pub ca_not_after: SystemTime,
    pub server_not_after: SystemTime,
}

/// Writes a CA and a server certificate for `sans` (empty: [`default_sans`]) valid for `days`
/// into `dir` (created if missing). See the module docs for the overwrite and reuse rules.
pub fn generate(dir: &Path, sans: &[San], days: u32, force: bool) -> Result<Generated, CertsError> {
    if days == 0 || days > MAX_DAYS {
        return Err(CertsError::InvalidDays { days });
    }
    let sans = if sans.is_empty() {
        default_sans()
    } else {
        let mut unique: Vec<San> = Vec::with_capacity(sans.len());
        for san in sans {
            if !unique.contains(san) {
                unique.push(san.clone());
            }
        }
        unique
    };
    let layout = Layout::new(dir);
    fs::create_dir_all(dir).map_err(|source| CertsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let reuse_ca = if force {
        false
    } else {
        let ca_cert = exists(&layout.ca_cert)?;
        let ca_key = exists(&layout.ca_key)?;
        let server_existing: Vec<PathBuf> = [&layout.server_cert, &layout.server_key]
            .into_iter()
            .filter_map(|p| match exists(p) {
                Ok(true) => Some(Ok(p.clone())),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;
        if !server_existing.is_empty() {
            let mut files = Vec::new();
            if !(ca_cert && ca_key) {
                files.extend(
                    [&layout.ca_cert, &layout.ca_key]
                        .into_iter()
                        .zip([ca_cert, ca_key])
                        .filter(|(_, present)| *present)
                        .map(|(p, _)| p.clone()),
                );
            }
            files.extend(server_existing);
            return Err(CertsError::WouldOverwrite { files });
        }
        match (ca_cert, ca_key) {
            (true, true) => true,
            (false, false) => false,
            (true, false) => {
                return Err(CertsError::IncompleteCa {
                    present: layout.ca_cert.clone(),
                    missing: layout.ca_key.clone(),
                })
            }
            (false, true) => {
                return Err(CertsError::IncompleteCa {
                    present: layout.ca_key.clone(),
                    missing: layout.ca_cert.clone(),
                })
            }
        }
    };

    let now = OffsetDateTime::now_utc();
    let not_after = now + time::Duration::days(i64::from(days));

    let (ca, ca_key) = if reuse_ca {
        existing_ca(&layout, now)?
    } else {
        let ca = new_ca(now, not_after)?;
        write_file(&layout.ca_key, ca.1.serialize_pem().as_bytes(), 0o600)?;
        write_file(&layout.ca_cert, ca.0.pem().as_bytes(), 0o644)?;
        ca
    };
    // A server certificate outliving its CA would be rejected once the CA expires anyway.
    let server_not_after = not_after.min(ca.params().not_after);

    let server_key = KeyPair::generate().map_err(|source| CertsError::Generate {
        what: "server key",
        source,
    })?;
    let server = server_params(&sans, now, server_not_after)?
        .signed_by(&server_key, &ca, &ca_key)
        .map_err(|source| CertsError::Generate {
            what: "server certificate",
            source,
        })?;
    write_file(
        &layout.server_key,
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let chain = format!("{}{}", server.pem(), ca.pem());
    write_file(&layout.server_cert, chain.as_bytes(), 0o644)?;

    Ok(Generated {
        layout,
        sans,
        ca_reused: reuse_ca,
        ca_not_after: ca.params().not_after.into(),
        server_not_after: server_not_after.into(),
    })
}

/// What [`generate_client`] wrote.
#[derive(Clone, Debug)]
pub struct GeneratedClient {
    /// `DIR/NAME.pem`: the client certificate, then the CA certificate (a chain).
    pub cert: PathBuf,
    /// `DIR/NAME-key.pem`, mode 0600.
    pub key: PathBuf,
    pub name: String,
    pub not_after: SystemTime,
}

/// Issues a client certificate `NAME` (for `outpost.tls.clientCa`, mutual TLS) from the CA that
/// [`generate`] wrote into `dir`, valid for `days` (no longer than the CA). Existing files of
/// that name are overwritten only with `force`.
pub fn generate_client(
    dir: &Path,
    name: &str,
    days: u32,
    force: bool,
) -> Result<GeneratedClient, CertsError> {
    if days == 0 || days > MAX_DAYS {
        return Err(CertsError::InvalidDays { days });
    }
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid_name {
        return Err(CertsError::InvalidClientName {
            name: name.to_owned(),
        });
    }
    let layout = Layout::new(dir);
    if !(exists(&layout.ca_cert)? && exists(&layout.ca_key)?) {
        return Err(CertsError::NoCa {
            dir: dir.to_path_buf(),
        });
    }
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    if !force {
        let existing: Vec<PathBuf> = [&cert_path, &key_path]
            .into_iter()
            .filter_map(|p| match exists(p) {
                Ok(true) => Some(Ok(p.clone())),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;
        if !existing.is_empty() {
            return Err(CertsError::WouldOverwrite { files: existing });
        }
    }
    let now = OffsetDateTime::now_utc();
    let (ca, ca_key) = existing_ca(&layout, now)?;
    let not_after = (now + time::Duration::days(i64::from(days))).min(ca.params().not_after);
    let key = KeyPair::generate().map_err(|source| CertsError::Generate {
        what: "client key",
        source,
    })?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "outpost");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = not_after;
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .map_err(|source| CertsError::Generate {
            what: "client certificate",
            source,
        })?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    let chain = format!("{}{}", cert.pem(), ca.pem());
    write_file(&cert_path, chain.as_bytes(), 0o644)?;
    Ok(GeneratedClient {
        cert: cert_path,
        key: key_path,
        name: name.to_owned(),
        not_after: not_after.into(),
    })
}

fn exists(path: &Path) -> Result<bool, CertsError> {
    path.try_exists().map_err(|source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn new_ca(
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(rcgen::Certificate, KeyPair), CertsError> {
    let key = KeyPair::generate().map_err(|source| CertsError::Generate {
        what: "CA key",
        source,
    })?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "outpost");
    dn.push(DnType::CommonName, "outpost local CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = not_after;
    let cert = params
        .self_signed(&key)
        .map_err(|source| CertsError::Generate {
            what: "CA certificate",
            source,
        })?;
    Ok((cert, key))
}

/// Loads `ca.pem` and `ca-key.pem` to issue a new server certificate, after checking that the
/// CA is a CA, is currently valid, and that the key belongs to it.
fn existing_ca(
    layout: &Layout,
    now: OffsetDateTime,
) -> Result<(rcgen::Certificate, KeyPair), CertsError> {
    let unusable = |path: &Path, detail: String| CertsError::UnusableCa {
        path: path.to_path_buf(),
        detail,
    };
    let cert_pem = read_text(&layout.ca_cert)?;
    let key_pem = read_text(&layout.ca_key)?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| unusable(&layout.ca_key, format!("not a usable private key ({e})")))?;

    let ders = crate::load::certificates(&layout.ca_cert, cert_pem.as_bytes())?;
    let (_, parsed) = x509_parser::parse_x509_certificate(ders[0].as_ref())
        .map_err(|e| unusable(&layout.ca_cert, format!("not a valid certificate ({e})")))?;
    if !parsed.is_ca() {
        return Err(unusable(
            &layout.ca_cert,
            "it is not a CA certificate (basic constraints CA:false)".to_owned(),
        ));
    }
    if parsed.public_key().raw != key.public_key_der().as_slice() {
        return Err(CertsError::KeyMismatch {
            cert: layout.ca_cert.clone(),
            key: layout.ca_key.clone(),
        });
    }
    crate::load::check_validity(&layout.ca_cert, &parsed, now.into())?;

    let params = CertificateParams::from_ca_cert_pem(&cert_pem)
        .map_err(|e| unusable(&layout.ca_cert, format!("cannot read it as a CA ({e})")))?;
    // Re-signing the parsed parameters with the same key gives an issuer with the same name and
    // key identifier; only the on-disk ca.pem is ever handed to clients.
    let cert = params
        .self_signed(&key)
        .map_err(|source| CertsError::Generate {
            what: "CA issuer",
            source,
        })?;
    Ok((cert, key))
}

fn server_params(
    sans: &[San],
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::default();
    params.subject_alt_names =
        sans.iter()
            .map(|san| match san {
                San::Dns(name) => name.clone().try_into().map(SanType::DnsName).map_err(|_| {
                    CertsError::InvalidSan {
                        value: name.clone(),
                    }
                }),
                San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "outpost");
    if let Some(first) = sans.first() {
        dn.push(DnType::CommonName, first.to_string());
    }
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = not_after;
    Ok(params)
}

fn read_text(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(|source| CertsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary file in the same directory created with
/// `mode`, fsynced and renamed into place: readers see the old file or the whole new one.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    let err = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        // The mode given to open is filtered by the umask and ignored for an existing file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)?;
    if let Some(parent) = path.parent() {
        // Make the rename durable; not every platform can open a directory, so best effort.
        if let Ok(dir) = fs::File::open(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        }) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}
