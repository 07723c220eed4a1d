//! outpost's TLS material: making it, loading it, and serving it. No HTTP lives here.
//!
//! Layout:
//!
//! - `san`: a subject alternative name (`localhost`, `10.0.0.5`) parsed once into [`San`], and
//!   the default set for this machine.
//! - `generate`: [`generate()`] writes a CA and a server certificate signed by it
//!   into one directory (the files are named in [`Layout`]).
//! - `load`: [`load_certified_key`] reads a PEM chain and its private key and checks them
//!   (key matches, certificate currently valid).
//! - `reload`: [`ServerTls`], the rustls server configuration whose certificate follows its
//!   files on disk.
//! - `error`: [`CertsError`], every failure with the file it concerns.
//!
//! Invariants:
//!
//! - Private keys are written with mode 0600, through a temporary file renamed into place, so a
//!   reader never sees a half-written key and a key is never readable by others, even briefly.
//! - Nothing is overwritten unless the caller asked for it (`force`).
//! - A [`ServerTls`] always holds a certificate that loaded and checked cleanly; a bad file on
//!   disk leaves the previous certificate in service.
//! - Private key bytes never reach an error message or a `Debug` print.
#![forbid(unsafe_code)]

mod error;
mod generate;
mod load;
mod reload;
mod san;

pub use error::CertsError;
pub use generate::{generate, generate_client, Generated, GeneratedClient, Layout};
pub use load::load_certified_key;
pub use reload::ServerTls;
pub use san::{default_sans, San};

/// The crypto provider outpost uses for every TLS operation (ring).
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
