//! `/metrics`, `/healthz`, `/readyz` and the admin listener, black-box: outpost in-process in
//! front of the fake registry; every number read from `/metrics` is checked against what the
//! client received or what the fake counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use config::{CacheConfig, Config};
use http::StatusCode;
use oci::{Algorithm, Digest};
use outpost_tests::fake::{Auth, FakeRegistry};
use outpost_tests::logs::Captured;
use outpost_tests::outpost::{external_config, Client, Outpost};
use outpost_tests::wait::{wait_for, wait_for_async, DEADLINE};

const REPO: &str = "p/quay.io/app/x";

struct Image {
    manifest_digest: Digest,
    config_digest: Digest,
    config_len: u64,
    layer_digest: Digest,
    layer_len: u64,
}

/// A one-layer image tagged `v1` in [`REPO`] (with [`FakeRegistry::push_image`]).
fn push_image(fake: &FakeRegistry, layer: Bytes) -> Image {
    let pushed = fake.push_image(
        REPO,
        Some("v1"),
        r#"{"os":"linux","architecture":"amd64"}"#,
        vec![layer],
    );
    let (layer_digest, layer) = pushed.layers[0].clone();
    Image {
        manifest_digest: pushed.digest,
        config_digest: pushed.config.0.clone(),
        config_len: pushed.config.1.len() as u64,
        layer_digest,
        layer_len: layer.len() as u64,
    }
}

fn blob_path(digest: &Digest) -> String {
    format!("/v2/quay.io/app/x/blobs/{digest}")
}

const TAG_PATH: &str = "/v2/quay.io/app/x/manifests/v1";

/// One sample line of the exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition strictly: every line is `# HELP name text`, `# TYPE name type`,
/// `# EOF` (last) or `name{label="value",...} value`; every sample belongs to a family that has
/// both a HELP and a TYPE line. Panics with the offending line otherwise.
fn parse_exposition(text: &str) -> Vec<Sample> {
    fn is_name(s: &str) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "no `# EOF` at the end:\n{text}"
    );
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_name(name) && !doc.is_empty(), "bad HELP line {line:?}");
            help.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(is_name(name), "bad TYPE line {line:?}");
            assert!(
                [
                    "counter",
                    "gauge",
                    "histogram",
                    "summary",
                    "info",
                    "unknown"
                ]
                .contains(&kind),
                "unknown type in {line:?}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let mut labels = BTreeMap::new();
                for pair in body.split(',').filter(|p| !p.is_empty()) {
                    let (key, quoted) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                    assert!(is_name(key), "bad label name in {line:?}");
                    let value = quoted
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
                    labels.insert(key.to_owned(), value.to_owned());
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.contains_key(*base))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family) && help.contains(family),
            "sample {name} has no HELP/TYPE for {family}:\n{text}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// The exposition of `url` (`/metrics`), parsed.
struct Scrape(Vec<Sample>);

impl Scrape {
    async fn of(client: &Client, url: &str) -> Scrape {
        let reply = client.get(url).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}");
        assert!(
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/openmetrics-text")),
            "{:?}",
            reply.header("content-type")
        );
        let text = String::from_utf8(reply.body.to_vec()).expect("UTF-8 exposition");
        Scrape(parse_exposition(&text))
    }

    /// The sum of the samples named `name` whose labels include `labels`; 0 when none.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// Scrapes `metrics` until `outpost_fills_in_flight` is 0 (every fill committed or failed), and
/// returns that scrape.
async fn no_fill_in_flight(client: &Client, metrics: &str) -> Scrape {
    wait_for_async("no fill in flight", DEADLINE, || async move {
        let scrape = Scrape::of(client, metrics).await;
        let fills = scrape.get("outpost_fills_in_flight", &[]);
        if fills == 0.0 {
            Ok(scrape)
        } else {
            Err(fills)
        }
    })
    .await
}

fn zero_ttl(host: &str) -> Config {
    Config {
        cache: CacheConfig {
            tag_ttl: Duration::ZERO,
            ..Config::default().cache
        },
        ..external_config(host, "p", None)
    }
}

#[tokio::test]
async fn metrics_follow_a_miss_a_hit_a_revalidation_and_a_stale_serve() {
    let fake = FakeRegistry::start().await;
    let image = push_image(&fake, Bytes::from(vec![5u8; 200_000]));
    let outpost = Outpost::start(zero_ttl(&fake.host())).await;
    let client = Client::new();
    let metrics = outpost.url("/metrics");
    let host = fake.host();

    let before = Scrape::of(&client, &metrics).await;
    assert_eq!(before.get("outpost_requests_total", &[]), 0.0);
    assert_eq!(before.get("outpost_ready", &[]), 1.0);
    assert_eq!(before.get("outpost_store_blobs", &[]), 0.0);

    // Cold: manifest by tag and both blobs are misses, their bytes come from the upstream.
    let manifest = client.get(&outpost.url(TAG_PATH)).await;
    assert_eq!(manifest.status, StatusCode::OK);
    assert_eq!(manifest.digest(), image.manifest_digest);
    for digest in [&image.config_digest, &image.layer_digest] {
        let blob = client.stream(&outpost.url(&blob_path(digest)), &[]).await;
        assert_eq!(&blob.body.unwrap().0, digest);
    }
    // The commits (fsync, rename) finish after the clients have their last bytes.
    let cold = no_fill_in_flight(&client, &metrics).await;
    let pulled = manifest.body.len() as f64 + (image.config_len + image.layer_len) as f64;
    assert_eq!(
        cold.get("outpost_cache_requests_total", &[("outcome", "miss")]),
        3.0
    );
    assert_eq!(
        cold.get("outpost_cache_requests_total", &[("outcome", "hit")]),
        0.0
    );
    assert_eq!(
        cold.get("outpost_served_bytes_total", &[("source", "upstream")]),
        pulled
    );
    assert_eq!(
        cold.get("outpost_served_bytes_total", &[("source", "store")]),
        0.0
    );
    assert_eq!(
        cold.get(
            "outpost_requests_total",
            &[("operation", "manifest"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        cold.get(
            "outpost_requests_total",
            &[("operation", "blob"), ("status", "200")]
        ),
        2.0
    );
    // Every request the fake saw is counted, with its status, and timed; so is the one HTTPS
    // attempt that found out the (insecure) registry speaks plain HTTP, as an error.
    let seen = fake.requests().len() as f64;
    assert!(seen >= 3.0, "{:#?}", fake.requests());
    assert_eq!(
        cold.get(
            "outpost_upstream_requests_total",
            &[("host", host.as_str()), ("status", "200")]
        ),
        seen
    );
    assert_eq!(
        cold.get(
            "outpost_upstream_requests_total",
            &[("host", host.as_str()), ("status", "error")]
        ),
        1.0
    );
    assert_eq!(
        cold.get(
            "outpost_upstream_request_duration_seconds_count",
            &[("host", host.as_str())]
        ),
        seen + 1.0
    );
    assert_eq!(cold.get("outpost_store_blobs", &[]), 3.0);
    assert_eq!(
        cold.get("outpost_store_bytes", &[]),
        pulled,
        "manifest, config and layer are stored"
    );
    assert_eq!(cold.get("outpost_fills_in_flight", &[]), 0.0);

    // Warm: the layer again is a hit served from the store, and the upstream is not asked.
    let layer = client
        .stream(&outpost.url(&blob_path(&image.layer_digest)), &[])
        .await;
    assert_eq!(&layer.body.unwrap().0, &image.layer_digest);
    let warm = Scrape::of(&client, &metrics).await;
    assert_eq!(
        warm.get("outpost_cache_requests_total", &[("outcome", "hit")]),
        1.0
    );
    assert_eq!(
        warm.get("outpost_served_bytes_total", &[("source", "store")]),
        image.layer_len as f64
    );
    assert_eq!(
        warm.get("outpost_upstream_requests_total", &[]),
        seen + 1.0,
        "a hit asked the upstream"
    );

    // The tag TTL is zero: the tag is revalidated with a HEAD and served from the store.
    let revalidated = client.get(&outpost.url(TAG_PATH)).await;
    assert_eq!(revalidated.digest(), image.manifest_digest);
    let after = Scrape::of(&client, &metrics).await;
    assert_eq!(
        after.get(
            "outpost_cache_requests_total",
            &[("outcome", "revalidated")]
        ),
        1.0
    );
    assert_eq!(
        after.get("outpost_upstream_requests_total", &[("status", "200")]),
        seen + 1.0
    );
    assert_eq!(fake.requests_matching("HEAD", "/manifests/v1").len(), 1);

    // The upstream is gone: the stored manifest is served stale, the failure is counted.
    fake.stop().await;
    let stale = client.get(&outpost.url(TAG_PATH)).await;
    assert_eq!(stale.status, StatusCode::OK, "{:?}", stale.body);
    assert_eq!(stale.digest(), image.manifest_digest);
    assert!(stale
        .header("warning")
        .is_some_and(|w| w.starts_with("110")));
    let offline = Scrape::of(&client, &metrics).await;
    assert_eq!(
        offline.get("outpost_cache_requests_total", &[("outcome", "stale")]),
        1.0
    );
    assert!(
        offline.get(
            "outpost_upstream_requests_total",
            &[("host", host.as_str()), ("status", "error")]
        ) >= 1.0
    );
    assert_eq!(
        offline.get("outpost_served_bytes_total", &[("source", "store")]),
        (image.layer_len + revalidated.body.len() as u64 + stale.body.len() as u64) as f64
    );
    assert_eq!(
        offline.get(
            "outpost_requests_total",
            &[("operation", "manifest"), ("status", "200")]
        ),
        3.0
    );
    // Scrapes are not counted as registry requests.
    assert_eq!(offline.get("outpost_requests_total", &[]), 6.0);
}

#[tokio::test]
async fn errors_and_token_fetches_are_counted() {
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::anonymous_bearer(300));
    let image = push_image(&fake, Bytes::from(vec![1u8; 1000]));
    let outpost = Outpost::start(external_config(&fake.host(), "p", None)).await;
    let client = Client::new();
    let reply = client.get(&outpost.url(TAG_PATH)).await;
    assert_eq!(reply.digest(), image.manifest_digest);
    let missing = client
        .get(&outpost.url("/v2/quay.io/app/x/manifests/nope"))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let invalid = client.get(&outpost.url("/v2/UPPER/manifests/v1")).await;
    assert!(invalid.status.is_client_error());
    let scrape = Scrape::of(&client, &outpost.url("/metrics")).await;
    let host = fake.host();
    assert!(fake.token_fetches() >= 1);
    assert_eq!(
        scrape.get(
            "outpost_upstream_token_fetches_total",
            &[("host", host.as_str()), ("result", "ok")]
        ),
        fake.token_fetches() as f64
    );
    assert_eq!(
        scrape.get(
            "outpost_requests_total",
            &[("operation", "manifest"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        scrape.get(
            "outpost_requests_total",
            &[
                ("operation", "other"),
                ("status", &invalid.status.as_u16().to_string())
            ]
        ),
        1.0
    );
    // The upstream's 401 and 404 are seen per status.
    assert!(
        scrape.get(
            "outpost_upstream_requests_total",
            &[("host", host.as_str()), ("status", "404")]
        ) >= 1.0
    );
    // Everything the fake answered, plus the HTTPS attempt on the insecure registry.
    assert_eq!(
        scrape.get("outpost_upstream_requests_total", &[]),
        fake.requests().len() as f64 + 1.0
    );
}

#[tokio::test]
async fn evictions_are_counted() {
    let fake = FakeRegistry::start().await;
    let blobs: Vec<Digest> = (1..=3u8)
        .map(|i| fake.add_blob(REPO, vec![i; 400_000]))
        .collect();
    let config = Config {
        cache: CacheConfig {
            max_size: Some(1_000_000),
            ..Config::default().cache
        },
        ..external_config(&fake.host(), "p", None)
    };
    let outpost = Outpost::start(config).await;
    let client = Client::new();
    let metrics = outpost.url("/metrics");
    for digest in &blobs {
        let blob = client.stream(&outpost.url(&blob_path(digest)), &[]).await;
        assert_eq!(&blob.body.unwrap().0, digest);
        // Each blob committed (and its size counted) before the next is asked for.
        no_fill_in_flight(&client, &metrics).await;
    }
    // gc runs in the background after the fill that crossed the limit; it counts what it
    // removed once done.
    let (client, metrics) = (&client, metrics.as_str());
    let scrape = wait_for_async(
        "the size limit's gc to count its evictions",
        DEADLINE,
        || async move {
            let scrape = Scrape::of(client, metrics).await;
            let counted = (
                scrape.get("outpost_evictions_total", &[]),
                scrape.get("outpost_evicted_bytes_total", &[]),
            );
            if counted.0 > 0.0 && counted.1 > 0.0 {
                Ok(scrape)
            } else {
                Err(counted)
            }
        },
    )
    .await;
    let evicted = scrape.get("outpost_evictions_total", &[]);
    assert!(evicted >= 1.0);
    assert_eq!(
        scrape.get("outpost_evicted_bytes_total", &[]),
        evicted * 400_000.0
    );
    assert_eq!(scrape.get("outpost_store_blobs", &[]), 3.0 - evicted);
    assert!(scrape.get("outpost_store_bytes", &[]) <= 1_000_000.0);
}

#[tokio::test]
async fn healthz_and_readyz() {
    let outpost = Outpost::start(Config::default()).await;
    let client = Client::new();
    let health = client.get(&outpost.url("/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, "ok\n");
    let ready = client.get(&outpost.url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body, "ready\n");
    // Not under /v2/, and only the exact paths.
    for path in ["/v2/healthz", "/healthz/", "/readyz/x"] {
        let other = client.get(&outpost.url(path)).await;
        assert!(other.status.is_client_error(), "{path}: {}", other.status);
        assert_ne!(other.body, "ok\n", "{path}");
    }
    let head = client.head(&outpost.url("/readyz")).await;
    assert_eq!(head.status, StatusCode::OK);
}

/// Writes `n` blob files into `dir` the way a previous run would have left them, unindexed, so
/// the next open has to reconcile (hash and index) every one of them.
fn prepare_data_dir(dir: &Path, n: usize) {
    drop(storage::Store::open(dir).expect("create the store"));
    for i in 0..n {
        let content = format!("blob number {i} of a big store");
        let digest = Digest::compute(Algorithm::Sha256, content.as_bytes());
        let path = dir
            .join("blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_store_is_reconciled() {
    const BLOBS: usize = 10_000;
    let data_dir = tempfile::tempdir().unwrap();
    prepare_data_dir(data_dir.path(), BLOBS);
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.path().to_owned(),
        ..Config::default()
    };
    let running = server::start_listening(config).await.unwrap();
    let url = |path: &str| format!("http://{}{path}", running.addr);
    let client = Client::new();
    // Listening, alive, not ready: the store is still being reconciled.
    let ready = client.get(&url("/readyz")).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.body
    );
    assert_eq!(client.get(&url("/healthz")).await.status, StatusCode::OK);
    let scrape = Scrape::of(&client, &url("/metrics")).await;
    assert_eq!(scrape.get("outpost_ready", &[]), 0.0);
    // A registry request made now waits for the store instead of failing.
    let early = tokio::spawn({
        let client = client.clone();
        let url = url("/v2/_catalog");
        async move { client.get(&url).await }
    });
    running.ready().await.unwrap();
    let early = early.await.unwrap();
    assert_eq!(early.status, StatusCode::OK, "{:?}", early.body);
    assert_eq!(client.get(&url("/readyz")).await.status, StatusCode::OK);
    let scrape = Scrape::of(&client, &url("/metrics")).await;
    assert_eq!(scrape.get("outpost_ready", &[]), 1.0);
    assert_eq!(scrape.get("outpost_store_blobs", &[]), BLOBS as f64);
    running.stop().await;
}

#[tokio::test]
async fn a_store_that_cannot_open_is_reported_not_ready() {
    let data_dir = tempfile::tempdir().unwrap();
    // Another process (here: this test) holds the data dir.
    let _held = storage::Store::open(data_dir.path()).unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.path().to_owned(),
        ..Config::default()
    };
    let error = server::start(config.clone())
        .await
        .err()
        .expect("start fails");
    assert!(
        error
            .to_string()
            .contains(&data_dir.path().display().to_string()),
        "{error}"
    );
    let running = server::start_listening(config).await.unwrap();
    assert!(running.ready().await.is_err());
    let client = Client::new();
    let url = |path: &str| format!("http://{}{path}", running.addr);
    let ready = client.get(&url("/readyz")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&ready.body).starts_with("failed: "));
    let api = client.get(&url("/v2/")).await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api.error_code(), "UNAVAILABLE");
    assert_eq!(client.get(&url("/healthz")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_admin_listener_takes_the_endpoints_off_the_main_one() {
    let config = Config {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    let outpost = Outpost::start(config).await;
    let admin = outpost.running.admin_addr.expect("admin listener");
    assert_ne!(admin, outpost.running.addr);
    let client = Client::new();
    for path in ["/metrics", "/healthz", "/readyz"] {
        let main = client.get(&outpost.url(path)).await;
        assert_eq!(
            main.status,
            StatusCode::NOT_FOUND,
            "{path} on the main listener"
        );
        let there = client.get(&format!("http://{admin}{path}")).await;
        assert_eq!(there.status, StatusCode::OK, "{path} on the admin listener");
    }
    // The admin listener serves nothing else; the main one still serves the registry API.
    let v2 = client.get(&format!("http://{admin}/v2/")).await;
    assert_eq!(v2.status, StatusCode::NOT_FOUND);
    assert_eq!(
        client.get(&outpost.url("/v2/")).await.status,
        StatusCode::OK
    );
    // The requests above show up in the admin listener's metrics.
    let scrape = Scrape::of(&client, &format!("http://{admin}/metrics")).await;
    assert_eq!(
        scrape.get(
            "outpost_requests_total",
            &[("operation", "base"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        scrape.get("outpost_requests_total", &[("status", "404")]),
        3.0
    );
}

#[tokio::test]
async fn access_log_lines_carry_the_request_and_no_secret() {
    let logs = Captured::global();

    const PASSWORD: &str = "pw-that-must-not-be-logged";
    let fake = FakeRegistry::start().await;
    fake.set_auth(Auth::bearer("alice", PASSWORD, 300));
    let image = push_image(&fake, Bytes::from(vec![9u8; 50_000]));
    let outpost = Outpost::start(external_config(
        &fake.host(),
        "p",
        Some(("alice", PASSWORD)),
    ))
    .await;
    let client = Client::new();
    let manifest = client.get(&outpost.url(TAG_PATH)).await;
    assert_eq!(manifest.digest(), image.manifest_digest);
    let layer = client
        .stream(
            &outpost.url(&blob_path(&image.layer_digest)),
            &[("authorization", "Basic Y2xpZW50OmNsaWVudC1zZWNyZXQ=")],
        )
        .await;
    assert_eq!(&layer.body.unwrap().0, &image.layer_digest);

    // The line is written when the body has been sent: wait for both.
    let lines = wait_for("the access log lines of both requests", DEADLINE, || {
        let lines = logs.access_lines(&fake.host());
        if lines.len() >= 2 {
            Ok(lines)
        } else {
            Err(lines)
        }
    })
    .await;
    assert_eq!(lines.len(), 2, "{}", logs.text());
    let blob = &lines[1]["fields"];
    assert_eq!(blob["method"], "GET");
    assert_eq!(blob["path"], blob_path(&image.layer_digest));
    assert_eq!(blob["status"], 200);
    assert_eq!(blob["upstream"], fake.host());
    assert_eq!(blob["cache"], "miss");
    assert_eq!(blob["bytes"], image.layer_len);
    assert_eq!(blob["complete"], true);
    assert!(blob["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    assert_eq!(lines[0]["fields"]["path"], TAG_PATH);

    // Neither the upstream password, nor the Basic value made from it, nor the tokens the fake
    // issued, nor the client's own Authorization appear in any line, debug included.
    let text = logs.text();
    let mut secrets = vec![
        PASSWORD.to_owned(),
        "Y2xpZW50OmNsaWVudC1zZWNyZXQ=".to_owned(),
        "client-secret".to_owned(),
    ];
    for request in fake.requests() {
        if let Some(value) = request.authorization() {
            let credential = value.split_once(' ').map_or(value, |(_, c)| c);
            secrets.push(credential.to_owned());
        }
    }
    assert!(
        secrets.len() > 3,
        "outpost never authenticated: {:#?}",
        fake.requests()
    );
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{secret:?} was logged:\n{text}"
        );
    }
}

/// `contrib/outpost.service` is a valid unit (checked by `systemd-analyze verify`, with the
/// binary's path swapped for one that exists here) and keeps its hardening.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/outpost.service");
    let unit = std::fs::read_to_string(&unit_path).expect("contrib/outpost.service");
    for directive in [
        "ExecStart=/usr/local/bin/outpost serve --config /etc/outpost/config.yaml --data-dir /var/lib/outpost",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=outpost",
        "StateDirectory=outpost",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestartPreventExitStatus=2",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == directive),
            "{directive:?} is missing from {}",
            unit_path.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("outpost.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/outpost", "/bin/true")).unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package `systemd`) runs");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
