//! The Prometheus metrics of one outpost process: one [`Metrics`] registry, created by the server
//! before anything else and shared by the request path ([`crate::access_log`] records requests,
//! cache outcomes and bytes served), the upstream client (requests, latency, token fetches) and
//! the cache (evictions). Values that live elsewhere (store size, fills in flight) are read at
//! scrape time, see [`Scrape`]. Served as text by [`crate::admin`] on `/metrics`.
//!
//! Every metric is named `outpost_*`. Labels never carry a repository, a path or a credential:
//! only the operation, the HTTP status, the cache outcome and upstream host names taken from the
//! configuration (or from the redirects and token realms those hosts pointed at).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `outpost_requests_total` | counter | `operation`, `status` |
//! | `outpost_served_bytes_total` | counter | `source` (`store`, `upstream`) |
//! | `outpost_cache_requests_total` | counter | `outcome` (`hit`, `miss`, `revalidated`, `stale`, `pass-through`) |
//! | `outpost_upstream_requests_total` | counter | `host`, `status` (or `error`) |
//! | `outpost_upstream_request_duration_seconds` | histogram | `host` |
//! | `outpost_upstream_token_fetches_total` | counter | `host`, `result` (`ok`, `error`) |
//! | `outpost_fills_in_flight` | gauge | |
//! | `outpost_store_bytes`, `outpost_store_blobs` | gauge | |
//! | `outpost_evictions_total`, `outpost_evicted_bytes_total` | counter | |
//! | `outpost_config_refused_total` | counter | |
//! | `outpost_log_lines_dropped_total` | counter | (log lines dropped because stderr's reader did not keep up) |
//! | `outpost_ready` | gauge | |
//! | `outpost_shared_store_up` | gauge | (1: answering; 0: degraded, the node serves without it) |
//! | `outpost_shared_store_errors_total` | counter | `operation` |
//! | `outpost_shared_store_corrupt_total` | counter | (objects whose bytes did not match their digest) |
//! | `outpost_shared_store_uploads_total` | counter | `result` (`ok`, `present`, `failed`) |
//! | `outpost_shared_store_pending_uploads` | gauge | (failed uploads waiting for a retry) |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::route::Operation;

/// The `Content-Type` of what `/metrics` answers: prometheus-client writes the OpenMetrics text
/// format (a `# EOF` line at the end; counters declared without their `_total` suffix).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Configurations refused by this process. `outpost serve` exits when it refuses its
/// configuration, so in a serving process this is 0 unless a refusal happened before (kept
/// process-wide so every [`Metrics`] reports it; see [`config_refused`]).
static CONFIG_REFUSED: AtomicU64 = AtomicU64::new(0);

/// Reads how many log lines the process's log writer dropped (set once, by the binary).
type DroppedLines = Box<dyn Fn() -> u64 + Send + Sync>;
static LOG_LINES_DROPPED: std::sync::OnceLock<DroppedLines> = std::sync::OnceLock::new();

/// Where `outpost_log_lines_dropped_total` comes from: the log writer of the process, which
/// drops a line rather than hold up a request when stderr's reader does not keep up. Set once;
/// later calls are ignored.
pub fn count_dropped_log_lines(read: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = LOG_LINES_DROPPED.set(Box::new(read));
}

/// Log lines dropped so far (0 when no log writer counts them).
fn log_lines_dropped() -> u64 {
    LOG_LINES_DROPPED.get().map_or(0, |read| read())
}

/// Records that the configuration was refused (and logs it, since the process usually exits
/// right after, taking the counter with it).
pub fn config_refused(reason: &str) {
    CONFIG_REFUSED.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        metric = "outpost_config_refused_total",
        "configuration refused: {reason}"
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    host: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    host: String,
    result: &'static str,
}

/// Upstream latency buckets: 5 ms to ~20 s.
#[derive(Clone)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.005, 2.0, 13))
    }
}

/// Where the bytes of a response came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedFrom {
    /// The local registry (a hit, a revalidated tag, a stale serve).
    Store,
    /// An upstream (a miss, a pass-through, the local registry disabled).
    Upstream,
    /// The site's shared store (a node-local miss that another node had fetched).
    Shared,
}

impl ServedFrom {
    /// From the cache outcome of the access log; `upstream` is whether an upstream was involved.
    pub fn of(cache: Option<&str>, upstream: bool) -> Option<ServedFrom> {
        match cache {
            Some("hit" | "revalidated" | "stale") => Some(ServedFrom::Store),
            Some("shared") => Some(ServedFrom::Shared),
            Some(_) => Some(ServedFrom::Upstream),
            None if upstream => Some(ServedFrom::Upstream),
            None => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ServedFrom::Store => "store",
            ServedFrom::Upstream => "upstream",
            ServedFrom::Shared => "shared",
        }
    }
}

/// What is read at scrape time from the parts that own it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scrape {
    /// `/readyz` would answer 200.
    pub ready: bool,
    pub fills_in_flight: usize,
    /// The store's usage; `None` before it is open or with the local registry disabled.
    pub store: Option<storage::Usage>,
}

/// The registry and every metric in it. Cheap to share behind an `Arc`; recording is lock-free
/// except for the first use of a new label set.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    served_bytes: Family<SourceLabels, Counter>,
    cache: Family<OutcomeLabels, Counter>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_latency: Family<HostLabels, Histogram, LatencyBuckets>,
    token_fetches: Family<TokenLabels, Counter>,
    fills_in_flight: Gauge,
    store_bytes: Gauge,
    store_blobs: Gauge,
    evictions: Counter,
    evicted_bytes: Counter,
    config_refused: Counter,
    log_lines_dropped: Counter,
    ready: Gauge,
    shared_up: Gauge,
    shared_errors: Family<OperationLabels, Counter>,
    shared_corrupt: Counter,
    shared_uploads: Family<ResultLabels, Counter>,
    shared_pending: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("outpost"),
            requests: Family::default(),
            served_bytes: Family::default(),
            cache: Family::default(),
            upstream_requests: Family::default(),
            upstream_latency: Family::new_with_constructor(LatencyBuckets),
            token_fetches: Family::default(),
            fills_in_flight: Gauge::default(),
            store_bytes: Gauge::default(),
            store_blobs: Gauge::default(),
            evictions: Counter::default(),
            evicted_bytes: Counter::default(),
            config_refused: Counter::default(),
            log_lines_dropped: Counter::default(),
            ready: Gauge::default(),
            shared_up: Gauge::default(),
            shared_errors: Family::default(),
            shared_corrupt: Counter::default(),
            shared_uploads: Family::default(),
            shared_pending: Gauge::default(),
        };
        let r = &mut metrics.registry;
        r.register(
            "requests",
            "Client requests answered, by registry operation and HTTP status",
            metrics.requests.clone(),
        );
        r.register(
            "served_bytes",
            "Response body bytes sent to clients, by where they came from (store or upstream)",
            metrics.served_bytes.clone(),
        );
        r.register(
            "cache_requests",
            "Manifest and blob requests by cache outcome (hit, miss, revalidated, stale, pass-through)",
            metrics.cache.clone(),
        );
        r.register(
            "upstream_requests",
            "HTTP requests sent to upstreams (redirect targets and token realms included), by host and status",
            metrics.upstream_requests.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Time until an upstream's response headers arrived, by host",
            metrics.upstream_latency.clone(),
        );
        r.register(
            "upstream_token_fetches",
            "Bearer tokens fetched from token realms (cached tokens not counted), by upstream host and result",
            metrics.token_fetches.clone(),
        );
        r.register(
            "fills_in_flight",
            "Blob downloads into the store running now",
            metrics.fills_in_flight.clone(),
        );
        r.register(
            "store_bytes",
            "Bytes of blobs in the store",
            metrics.store_bytes.clone(),
        );
        r.register(
            "store_blobs",
            "Blobs in the store",
            metrics.store_blobs.clone(),
        );
        r.register(
            "evictions",
            "Blobs removed from the store to stay within cache.maxSize",
            metrics.evictions.clone(),
        );
        r.register(
            "evicted_bytes",
            "Bytes removed from the store to stay within cache.maxSize",
            metrics.evicted_bytes.clone(),
        );
        r.register(
            "config_refused",
            "Configurations refused by this process (outpost serve exits on a refused configuration; \
             see its log)",
            metrics.config_refused.clone(),
        );
        r.register(
            "log_lines_dropped",
            "Log lines dropped because the reader of stderr (journald, a pipe) did not keep up; \
             requests are never held up by the log",
            metrics.log_lines_dropped.clone(),
        );
        r.register(
            "ready",
            "1 once the store is open and reconciled and the listener is up (what /readyz answers)",
            metrics.ready.clone(),
        );
        r.register(
            "shared_store_up",
            "1 while the site's shared store answers, 0 while it is degraded (the node serves from \
             its own store and the upstreams)",
            metrics.shared_up.clone(),
        );
        r.register(
            "shared_store_errors",
            "Shared store calls that failed or timed out, by operation",
            metrics.shared_errors.clone(),
        );
        r.register(
            "shared_store_corrupt",
            "Objects of the shared store whose bytes did not match their digest (removed, fetched again)",
            metrics.shared_corrupt.clone(),
        );
        r.register(
            "shared_store_uploads",
            "Blobs, manifests and tag records copied to the shared store, by result (ok, present, failed)",
            metrics.shared_uploads.clone(),
        );
        r.register(
            "shared_store_pending_uploads",
            "Uploads to the shared store that failed and wait for a retry",
            metrics.shared_pending.clone(),
        );
        metrics
    }

    /// Whether the shared store answers (`false`: degraded).
    pub fn shared_up(&self, up: bool) {
        self.shared_up.set(i64::from(up));
    }

    /// A shared store call that failed or timed out.
    pub fn shared_error(&self, operation: &'static str) {
        self.shared_errors
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    /// An object of the shared store found corrupt.
    pub fn shared_corrupt(&self) {
        self.shared_corrupt.inc();
    }

    /// One upload to the shared store: `ok`, `present` (already there) or `failed`.
    pub fn shared_upload(&self, result: &'static str) {
        self.shared_uploads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Uploads waiting for a retry now.
    pub fn shared_pending(&self, pending: usize) {
        self.shared_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// One client request answered (recorded when its response headers go out).
    pub fn request(&self, operation: &'static str, status: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                operation,
                status: status.as_u16(),
            })
            .inc();
    }

    /// The cache outcome of one manifest or blob request.
    pub fn cache_outcome(&self, outcome: &'static str) {
        self.cache.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The counter of bytes served from `from`, to bump as a body's frames go out.
    pub fn served_bytes(&self, from: ServedFrom) -> Counter {
        self.served_bytes
            .get_or_create(&SourceLabels {
                source: from.label(),
            })
            .clone()
    }

    /// One request sent to `host`: its status, or `None` when it failed without one
    /// (connection, TLS, timeout); `elapsed` until the response headers (or the failure).
    pub fn upstream_response(&self, host: &str, outcome: upstream::Outcome, elapsed: Duration) {
        let status = match outcome {
            upstream::Outcome::Status(status) => status.as_u16().to_string(),
            upstream::Outcome::Failed => "error".to_owned(),
            upstream::Outcome::ProxyFailed => "proxy_error".to_owned(),
        };
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                host: host.to_ascii_lowercase(),
                status,
            })
            .inc();
        self.upstream_latency
            .get_or_create(&HostLabels {
                host: host.to_ascii_lowercase(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One token fetched (or not) for `host`.
    pub fn token_fetch(&self, host: &str, ok: bool) {
        self.token_fetches
            .get_or_create(&TokenLabels {
                host: host.to_ascii_lowercase(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// What a garbage collection of the store removed.
    pub fn evicted(&self, report: &storage::GcReport) {
        self.evictions.inc_by(report.removed.len() as u64);
        self.evicted_bytes
            .inc_by(report.removed.iter().map(|b| b.size).sum::<u64>());
    }

    /// The text exposition, with the scrape-time values of `scrape`.
    pub fn encode(&self, scrape: Scrape) -> String {
        self.ready.set(i64::from(scrape.ready));
        self.fills_in_flight
            .set(i64::try_from(scrape.fills_in_flight).unwrap_or(i64::MAX));
        let usage = scrape.store.unwrap_or_default();
        self.store_bytes
            .set(i64::try_from(usage.bytes).unwrap_or(i64::MAX));
        self.store_blobs
            .set(i64::try_from(usage.blobs).unwrap_or(i64::MAX));
        let refused = CONFIG_REFUSED.load(Ordering::Relaxed);
        let seen = self.config_refused.get();
        if refused > seen {
            self.config_refused.inc_by(refused - seen);
        }
        let dropped = log_lines_dropped();
        let counted = self.log_lines_dropped.get();
        if dropped > counted {
            self.log_lines_dropped.inc_by(dropped - counted);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Only a failing writer makes encoding fail, and a String does not fail.
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

/// The upstream client reports its requests and token fetches here.
impl upstream::Observer for Metrics {
    fn response(&self, host: &str, outcome: upstream::Outcome, elapsed: Duration) {
        self.upstream_response(host, outcome, elapsed);
    }

    fn token_fetch(&self, host: &str, ok: bool) {
        Metrics::token_fetch(self, host, ok);
    }
}

/// The `operation` label of a routed request.
pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Base => "base",
        Operation::Catalog { .. } => "catalog",
        Operation::Manifest { .. } => "manifest",
        Operation::Blob { .. } => "blob",
        Operation::Tags { .. } => "tags",
        Operation::Referrers { .. } => "referrers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric_with_help_and_type() {
        let metrics = Metrics::new();
        metrics.request("blob", StatusCode::OK);
        metrics.cache_outcome("hit");
        metrics.served_bytes(ServedFrom::Store).inc_by(42);
        metrics.upstream_response(
            "Registry.Example:5000",
            upstream::Outcome::Status(StatusCode::NOT_FOUND),
            Duration::from_millis(12),
        );
        let failed = upstream::Outcome::Failed;
        metrics.upstream_response("registry.example:5000", failed, Duration::from_secs(1));
        let proxy = upstream::Outcome::ProxyFailed;
        metrics.upstream_response("registry.example:5000", proxy, Duration::from_secs(1));
        metrics.token_fetch("registry.example:5000", true);
        let text = metrics.encode(Scrape {
            ready: true,
            fills_in_flight: 2,
            store: Some(storage::Usage {
                bytes: 10,
                blobs: 1,
            }),
        });
        for line in [
            "outpost_requests_total{operation=\"blob\",status=\"200\"} 1",
            "outpost_cache_requests_total{outcome=\"hit\"} 1",
            "outpost_served_bytes_total{source=\"store\"} 42",
            "outpost_upstream_requests_total{host=\"registry.example:5000\",status=\"404\"} 1",
            "outpost_upstream_requests_total{host=\"registry.example:5000\",status=\"error\"} 1",
            "outpost_upstream_requests_total{host=\"registry.example:5000\",status=\"proxy_error\"} 1",
            "outpost_upstream_request_duration_seconds_count{host=\"registry.example:5000\"} 3",
            "outpost_upstream_token_fetches_total{host=\"registry.example:5000\",result=\"ok\"} 1",
            "outpost_fills_in_flight 2",
            "outpost_store_bytes 10",
            "outpost_store_blobs 1",
            "outpost_ready 1",
            "# TYPE outpost_evictions counter",
            "# TYPE outpost_upstream_request_duration_seconds histogram",
            "# HELP outpost_config_refused Configurations refused",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn bytes_are_attributed_by_cache_outcome() {
        assert_eq!(ServedFrom::of(Some("hit"), true), Some(ServedFrom::Store));
        assert_eq!(
            ServedFrom::of(Some("stale"), false),
            Some(ServedFrom::Store)
        );
        assert_eq!(
            ServedFrom::of(Some("revalidated"), true),
            Some(ServedFrom::Store)
        );
        assert_eq!(
            ServedFrom::of(Some("miss"), true),
            Some(ServedFrom::Upstream)
        );
        assert_eq!(
            ServedFrom::of(Some("pass-through"), true),
            Some(ServedFrom::Upstream)
        );
        assert_eq!(ServedFrom::of(None, true), Some(ServedFrom::Upstream));
        assert_eq!(ServedFrom::of(None, false), None);
    }
}
