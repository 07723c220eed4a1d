//! The cache policy over the `storage` crate: digests are immutable, tags live for `cache.tagTtl`,
//! stale tags are served when the upstream is unavailable. (Filled in with the local registry.)

use http::{HeaderValue, Response};
use storage::Digest;

use crate::api::{App, Body, Manifest};
use crate::error::ApiError;
use crate::route::{Reference, Route, Source};
use crate::upstream::UpstreamError;

/// The local registry. Not constructible yet: outpost streams everything through.
pub enum Cache {}

impl Cache {
    pub fn repositories(&self) -> Vec<String> {
        match *self {}
    }

    pub async fn manifest(
        &self,
        _app: &App,
        _source: &Source,
        _reference: &Reference,
        _accept: HeaderValue,
        _head: bool,
    ) -> Result<Manifest, ApiError> {
        match *self {}
    }

    pub async fn blob(
        &self,
        _app: &App,
        _source: &Source,
        _digest: &Digest,
        _range: Option<HeaderValue>,
        _head: bool,
    ) -> Result<Response<Body>, ApiError> {
        match *self {}
    }

    pub fn local_tags(
        &self,
        _route: &Route,
        _source: &Source,
        _n: Option<u32>,
        _last: Option<&str>,
        _error: UpstreamError,
    ) -> Result<Response<Body>, ApiError> {
        match *self {}
    }
}
