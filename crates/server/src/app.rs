//! [`App`]: everything a request handler needs, shared by all connections, and how it is built
//! from a [`Config`].

use std::sync::Arc;

use config::Config;
use upstream::Upstream;

use crate::cache::Cache;
use crate::metrics::Metrics;

/// Everything a request handler needs; shared by all connections.
pub struct App {
    pub config: Arc<Config>,
    pub upstream: Upstream,
    /// The local registry; `None` when `outpost.localRegistry.enabled` is false.
    pub cache: Option<Cache>,
    /// The process's metrics (see [`crate::metrics`]).
    pub metrics: Arc<Metrics>,
}

/// Why an app could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    #[error(transparent)]
    Store(#[from] storage::StoreError),
}

/// The parts of an app that do not need the store, built before listening.
pub(crate) struct Parts {
    pub config: Arc<Config>,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
}

impl Parts {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Parts, AppError> {
        let timeouts = upstream::Timeouts {
            connect: config.upstream.connect,
            response_header: config.upstream.response_header,
        };
        let upstream = Upstream::build(&timeouts, config.proxy.clone(), Some(metrics.clone()))?;
        Ok(Parts {
            config: Arc::new(config),
            upstream,
            metrics,
        })
    }

    /// Opens (and reconciles) the store and completes the app. With the local registry
    /// disabled no store is opened at all: a pure streaming proxy.
    pub async fn open(self) -> Result<App, AppError> {
        let cache = if self.config.local_registry {
            Some(
                Cache::open(
                    self.config.clone(),
                    self.upstream.clone(),
                    self.metrics.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        Ok(App {
            config: self.config,
            upstream: self.upstream,
            cache,
            metrics: self.metrics,
        })
    }
}

impl App {
    /// The app a server runs, built in-process (`outpost prefetch` uses it). Its metrics start
    /// empty.
    pub async fn open(config: Config) -> Result<App, AppError> {
        Parts::new(config, Arc::new(Metrics::new()))?.open().await
    }
}
