//! outpost's proxy: the HTTP surface, routing, translation and upstream client.
//!
//! A pull request travels through these modules, in this order:
//!
//! - [`server`]: listener, TLS handshake, the tower stack, graceful shutdown.
//! - [`api`]: the OCI Distribution read API; ties the steps below together for each request.
//! - [`route`]: a pure function from the request path and query to an operation on a *source*
//!   repository (`quay.io` + `kairos/core`).
//! - [`translate`]: a pure function from the source to the *target*: the endpoint, remote
//!   repository name, credentials and TLS settings outpost actually uses.
//! - [`cache`]: the cache policy over the `storage` crate (immutable digests, tag TTL, stale-if-error).
//! - [`fill`]: one upstream download per blob, shared by every waiting client, detached from them.
//! - [`upstream`]: the upstream HTTP client: auth (Basic, Bearer with a token cache), redirects,
//!   per-registry TLS.
//! - [`error`]: the one place where errors become OCI error codes and HTTP statuses.
//!
//! Operating it: [`access_log`] (one line per request), [`metrics`] (the Prometheus registry),
//! [`admin`] (`/metrics`, `/healthz`, `/readyz`, the optional admin listener).
//!
//! Around them: [`config`] (YAML loading, merging, the support matrix, the routing table),
//! [`cli`] (the `outpost` command line), [`certs_cmd`] and [`containerd`] (TLS material and
//! containerd's hosts directory for operators), [`prefetch`] (fill the store before a node goes
//! out) and [`archive`] (air-gap export and import of OCI image layout archives).
//!
//! Invariants: credentials only leave the process towards the upstream they belong to; a client
//! never receives bytes that do not match the digest it asked for with a clean end of body.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod api;
pub mod archive;
pub mod cache;
pub mod certs_cmd;
pub mod cli;
pub mod config;
pub mod containerd;
pub mod error;
pub mod fill;
pub mod maintenance;
pub mod metrics;
pub mod prefetch;
pub mod route;
pub mod server;
pub mod translate;
pub mod upstream;
