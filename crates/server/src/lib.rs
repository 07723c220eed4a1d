//! outpost's registry server: the OCI Distribution read API in front of the upstreams and the
//! local registry. A pull travels through these modules, in this order:
//!
//! - `route`: a pure function from the request's method, path and query to an operation on a
//!   *source* repository (`quay.io` + `kairos/core`).
//! - `api`: the handlers, one per operation; each translates the source once
//!   ([`config::translate`]) to the *target* outpost fetches from.
//! - `cache`: the cache policy over the `storage` crate (immutable digests, tag TTL,
//!   stale-if-error, infrastructure images passed through).
//! - `fill`: one upstream download per blob, shared by every waiting client, detached from them;
//!   `read`: response bodies read from blob files within a memory budget.
//! - `origin`: what is asked of the upstream (through the `upstream` crate) and how its answers
//!   are checked (digests, media types, sizes); `paging`: `tags/list` and `_catalog` pages.
//! - `error`: the one place where errors become OCI error codes and HTTP statuses.
//! - `response`, `manifest`, `body`: the responses outpost sends; `referrers`: referrers
//!   indexes checked and filtered.
//!
//! Around them: `auth` (who may pull: htpasswd; mutual TLS is the handshake's), `serve` (the registry listener, startup, the request service), `listen` (the one
//! accept loop and every connection limit), `admin` (`/metrics`, `/healthz`, `/readyz`), `access_log` (one line per
//! request), `metrics` (the Prometheus registry), `app` ([`App`], what every handler shares).
//!
//! Arrows: handlers (`api`) use the cache, origin and response modules; `cache`, `fill` and
//! `origin` never import the handlers (`.ci/check-deps` checks it).
//!
//! Invariants: credentials only leave the process towards the upstream they belong to; a client
//! never receives a whole blob or manifest that does not match the digest it asked for with a
//! clean end of body (a `Range` of a blob being downloaded is sent as it arrives, before the
//! blob is verified: the client checks the assembled blob); no
//! input (request, upstream answer, stored record) can make a handler panic.
#![forbid(unsafe_code)]

mod access_log;
mod admin;
mod api;
mod app;
mod auth;
mod backoff;
mod body;
mod cache;
mod error;
mod fill;
mod listen;
mod manifest;
mod metrics;
mod origin;
mod paging;
mod read;
mod referrers;
mod response;
mod route;
mod serve;
mod tier;

pub use app::{App, AppError};
pub use body::{Body, BoxError};
pub use cache::Cache;
pub use error::ApiError;
pub use manifest::Manifest;
pub use metrics::{config_refused, count_dropped_log_lines, Metrics};
pub use origin::{fetch_manifest, fetch_referrers, pass_blob, read_limited};
pub use response::{passed_through, DOCKER_CONTENT_DIGEST};
pub use serve::{start, start_listening, Running, ServeError, SHUTDOWN_GRACE};
pub use tier::shared_settings;

/// Pure parsers of outside input, for the fuzz targets in `fuzz/` (feature `fuzzing`) and
/// nothing else: re-exports only.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::error::Kind;
    pub use crate::origin::{next_query, parse_tag_list};
    pub use crate::paging::{next_link, page};
    pub use crate::response::{parse_range, ByteRange};
    pub use crate::route::route;
}
