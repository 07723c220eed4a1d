//! outpost's content-addressed store. (Layout docs are written with the store.)
#![forbid(unsafe_code)]

mod digest;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
