//! A real Garage cluster (S3-compatible object store, <https://garagehq.deuxfleurs.fr>) on
//! 127.0.0.1, for the end-to-end scenarios of a multi-node site's shared store.
//!
//! [`GarageCluster::start`]`(n)` runs `n` `garage server` processes, each with its own temp dir
//! (`garage.toml`, `meta/`, `data/`, its logs) and its own free ports for RPC, the S3 API and the
//! admin API, all on 127.0.0.1. They share a random `rpc_secret`, use `db_engine = "sqlite"`,
//! `metadata_fsync = false` and `replication_factor = 3` (`n` when fewer than 3 nodes). Then, as
//! an operator would, through node 0's CLI (`garage -c node0/garage.toml …`):
//!
//! 1. `node connect <id>@127.0.0.1:<rpc>` for every other node, until each node reports every
//!    node up (`json-api GetClusterStatus`);
//! 2. `layout assign -z dc<i+1> -c 1G <id>` per node (each node its own zone),
//!    `layout apply --version 1`, until each node reports the cluster `healthy`
//!    (`json-api GetClusterHealth`);
//! 3. `bucket create outpost`, `key create outpost-key` (key id and secret parsed from its
//!    output), `bucket allow --read --write --owner outpost --key outpost-key`;
//! 4. until a signed `ListObjectsV2` of the bucket answers 200 on every node's S3 API.
//!
//! That takes a few seconds: 2 to 3.5 s for three nodes on a busy 2-core machine.
//!
//! The `garage` binary is `$GARAGE_BIN`, else `garage` on `PATH`, else `$CARGO_HOME/bin/garage`
//! (`~/.cargo/bin/garage`). When there is none, the suite installs it once with
//! `cargo install --locked garage` (8 to 20 minutes; 17.5 on 2 busy cores) and fails with a
//! clear message when that fails.
//!
//! S3 requests are made with curl's own SigV4 signing (`--aws-sigv4 aws:amz:garage:s3`):
//! [`GarageCluster::put`], [`GarageCluster::get`], or [`GarageCluster::s3_curl`] for anything
//! else. Garage refuses a signed request without `x-amz-content-sha256` (400 "Missing
//! X-Amz-Content-Sha256 field"), which curl 7.88 does not send by itself; when the header is
//! given, curl signs with its value. So bodies go as `--data-binary @FILE` with the header set
//! to the body's SHA-256 (for a big streamed body, `--upload-file` with
//! `x-amz-content-sha256: UNSIGNED-PAYLOAD` works too). curl 7.88 signs the query string as
//! written: its parameters must be sorted and percent-encoded (`?list-type=2&prefix=a%2F`), or
//! Garage answers 403 "Invalid signature".
//!
//! What Garage 2.5 does with conditional requests: `PutObject` ignores `If-None-Match: *` and
//! `If-Match` (200, the object is overwritten); `GetObject` honours `If-None-Match` (304) and
//! `If-Match` (412).
//!
//! Every process is killed and reaped on `Drop` (also when a test panics), then its dir removed;
//! [`GarageCluster::kill`] SIGKILLs one node while the others keep serving.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::real::{free_port, temp_dir, wait_until, Guarded};
use crate::tools::{describe, run, run_ok, Tool};

/// Garage's `s3_region`: what SigV4 signatures name as the region.
const REGION: &str = "garage";
const BUCKET: &str = "outpost";
const KEY_NAME: &str = "outpost-key";
/// How long each stage of the start (up, connected, healthy, serving S3) may take.
const STAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Garage cluster on 127.0.0.1 with one bucket and one key allowed on it.
pub struct GarageCluster {
    nodes: Vec<GarageNode>,
    access_key_id: String,
    secret_access_key: String,
    admin_token: String,
    /// How long [`GarageCluster::start`] took.
    startup: Duration,
}

/// One `garage server` and its dir.
struct GarageNode {
    // Fields drop in order: the process is killed before its dir is removed.
    process: Option<Guarded>,
    dir: tempfile::TempDir,
    rpc_port: u16,
    s3_port: u16,
    admin_port: u16,
    /// The full node id (64 hex digits, the node's public key).
    id: String,
}

impl GarageNode {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    /// `<id>@127.0.0.1:<rpc port>`, what `garage node connect` takes.
    fn peer_address(&self) -> String {
        format!("{}@127.0.0.1:{}", self.id, self.rpc_port)
    }

    /// A `garage -c <this node's garage.toml>` command.
    fn cli(&self) -> Command {
        let mut cmd = garage_command(&garage_binary());
        cmd.arg("-c").arg(self.config_path());
        cmd
    }

    /// `garage json-api <endpoint>` through this node, parsed; `Err(what went wrong)` when the
    /// CLI fails or prints something else than JSON.
    fn json_api(&self, endpoint: &str) -> Result<serde_json::Value, String> {
        let mut cmd = self.cli();
        cmd.args(["json-api", endpoint]);
        let out = run(&mut cmd);
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): {}",
                describe(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "{} printed no JSON ({e}): {}",
                describe(&cmd),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Panics with the node's log when its process has exited.
    fn assert_running(&mut self, index: usize) {
        if let Some(status) = self.process.as_mut().and_then(Guarded::exited) {
            panic!(
                "garage node {index} exited ({status}); its log ({}):\n{}",
                self.log_path().display(),
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
        }
    }
}

/// What an S3 request through curl answered.
#[derive(Clone, Debug)]
pub struct S3Response {
    pub status: u16,
    /// Header names lower-cased, in the order received (of the last response block).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl S3Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (S3 error XML).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl GarageCluster {
    /// Starts `nodes` Garage servers, forms one cluster with one zone per node, creates bucket
    /// `outpost` and key `outpost-key` (read, write, owner), and returns once every node's S3
    /// API serves the bucket to that key.
    pub fn start(nodes: usize) -> GarageCluster {
        assert!(nodes > 0, "a Garage cluster needs at least one node");
        let binary = garage_binary();
        let began = Instant::now();
        let rpc_secret = random_hex(32);
        let admin_token = random_hex(32);
        let replication_factor = nodes.min(3);

        let mut cluster = GarageCluster {
            nodes: (0..nodes)
                .map(|index| {
                    spawn_node(
                        &binary,
                        index,
                        &rpc_secret,
                        &admin_token,
                        replication_factor,
                    )
                })
                .collect(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            admin_token,
            startup: Duration::ZERO,
        };

        // Each node listens on its RPC port once it has made its node key.
        for index in 0..nodes {
            let node = &mut cluster.nodes[index];
            let rpc = SocketAddr::from((Ipv4Addr::LOCALHOST, node.rpc_port));
            let log = node.log_path();
            wait_until(node.process.as_mut().unwrap(), &log, STAGE_TIMEOUT, || {
                TcpStream::connect_timeout(&rpc, Duration::from_millis(200)).is_ok()
            });
            let out = run_ok(node.cli().args(["node", "id", "-q"]));
            let printed = String::from_utf8_lossy(&out.stdout);
            node.id = printed
                .trim()
                .split('@')
                .next()
                .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .unwrap_or_else(|| {
                    panic!("`garage node id -q` of node {index} printed {printed:?}")
                })
                .to_owned();
        }

        // 1. One cluster: node 0 connects to every other node; they learn of each other.
        for index in 1..nodes {
            let peer = cluster.nodes[index].peer_address();
            cluster.cli_ok(&["node", "connect", &peer]);
        }
        cluster.wait_on_every_node("every node to see every node up", |node| {
            let status = node.json_api("GetClusterStatus")?;
            let up = status["nodes"]
                .as_array()
                .map_or(0, |n| n.iter().filter(|n| n["isUp"] == true).count());
            if up == nodes {
                Ok(())
            } else {
                Err(format!("{up} of {nodes} nodes up: {status}"))
            }
        });

        // 2. The layout: each node its own zone, 1 GB each.
        for index in 0..nodes {
            let zone = format!("dc{}", index + 1);
            let id = cluster.nodes[index].id.clone();
            cluster.cli_ok(&["layout", "assign", "-z", &zone, "-c", "1G", &id]);
        }
        cluster.cli_ok(&["layout", "apply", "--version", "1"]);
        cluster.wait_on_every_node("the cluster to be healthy on every node", |node| {
            let health = node.json_api("GetClusterHealth")?;
            if health["status"] == "healthy" && health["storageNodes"] == nodes {
                Ok(())
            } else {
                Err(format!("not yet: {health}"))
            }
        });

        // 3. The bucket and the key.
        cluster.cli_ok(&["bucket", "create", BUCKET]);
        let created = cluster.cli_ok(&["key", "create", KEY_NAME]);
        cluster.access_key_id = table_value(&created, "Key ID")
            .unwrap_or_else(|| panic!("no `Key ID` in `garage key create` output:\n{created}"));
        cluster.secret_access_key = table_value(&created, "Secret key")
            .unwrap_or_else(|| panic!("no `Secret key` in `garage key create` output:\n{created}"));
        cluster.cli_ok(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", KEY_NAME,
        ]);

        // 4. Every node's S3 API lists the bucket for the key.
        let (key_id, secret) = (
            cluster.access_key_id.clone(),
            cluster.secret_access_key.clone(),
        );
        cluster.wait_on_every_node("every node's S3 API to list the bucket", |node| {
            let response = s3_request(
                &format!("http://127.0.0.1:{}/{BUCKET}?list-type=2", node.s3_port),
                &key_id,
                &secret,
                "GET",
                None,
                &[],
            )?;
            if response.status == 200 {
                Ok(())
            } else {
                Err(format!("{}: {}", response.status, response.text()))
            }
        });
        cluster.startup = began.elapsed();
        cluster
    }

    /// How long [`GarageCluster::start`] took (binary lookup excluded).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// How many nodes the cluster was started with (killed ones included).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// `http://127.0.0.1:PORT`, node `node`'s S3 API.
    pub fn s3_endpoint(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.node(node).s3_port)
    }

    /// `http://127.0.0.1:PORT`, node `node`'s admin API (`GET /health`, `/metrics`, and the
    /// admin endpoints with `Authorization: Bearer <admin_token>`).
    pub fn admin_endpoint(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.node(node).admin_port)
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The region S3 signatures name (Garage's `s3_region`).
    pub fn region(&self) -> &str {
        REGION
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// `GK…`, the key allowed to read, write and own the bucket.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The full node id (64 hex digits) of node `node`.
    pub fn node_id(&self, node: usize) -> &str {
        &self.node(node).id
    }

    /// The dir of node `node` (`garage.toml`, `meta/`, `data/`, `garage.log`).
    pub fn node_dir(&self, node: usize) -> &Path {
        self.node(node).dir.path()
    }

    /// What node `node` logged so far.
    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.node(node).log_path()).unwrap_or_default()
    }

    /// SIGKILLs node `node` and reaps it; the others keep serving (with three nodes and
    /// replication factor 3, reads and writes need two).
    pub fn kill(&mut self, node: usize) {
        assert!(node < self.nodes.len(), "no garage node {node}");
        self.nodes[node].process = None;
        let s3 = SocketAddr::from((Ipv4Addr::LOCALHOST, self.nodes[node].s3_port));
        assert!(
            TcpStream::connect_timeout(&s3, Duration::from_millis(300)).is_err(),
            "garage node {node} still listens on {s3} after it was killed"
        );
    }

    /// Runs `garage ARGS…` against the cluster (through the first live node's config) and
    /// returns its output whatever the exit status.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        run(self.live_node().cli().args(args))
    }

    /// Like [`GarageCluster::cli`]; panics (with the output) unless it exits 0, returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = run_ok(self.live_node().cli().args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `http://127.0.0.1:PORT/outpost/<key>` on node `node`.
    pub fn object_url(&self, node: usize, key: &str) -> String {
        format!("{}/{BUCKET}/{key}", self.s3_endpoint(node))
    }

    /// A curl command that signs with the cluster's key (`--aws-sigv4 aws:amz:garage:s3`,
    /// `--user KEY:SECRET`); add `x-amz-content-sha256` (see the module doc), the method and URL.
    pub fn s3_curl(&self) -> Command {
        s3_curl(&self.access_key_id, &self.secret_access_key)
    }

    /// `PUT /outpost/<key>` with `body` and extra `headers` through node `node`.
    pub fn put(&self, node: usize, key: &str, body: &[u8], headers: &[(&str, &str)]) -> S3Response {
        self.request(node, "PUT", key, Some(body), headers)
    }

    /// `GET /outpost/<key>` through node `node`.
    pub fn get(&self, node: usize, key: &str) -> S3Response {
        self.request(node, "GET", key, None, &[])
    }

    /// A signed request on object `key` through node `node`; panics only when nothing answers.
    pub fn request(
        &self,
        node: usize,
        method: &str,
        key: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> S3Response {
        let url = self.object_url(node, key);
        s3_request(
            &url,
            &self.access_key_id,
            &self.secret_access_key,
            method,
            body,
            headers,
        )
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    fn node(&self, node: usize) -> &GarageNode {
        self.nodes.get(node).unwrap_or_else(|| {
            panic!(
                "no garage node {node} (the cluster has {})",
                self.nodes.len()
            )
        })
    }

    /// The first node whose process is running (the CLI needs one to talk to).
    fn live_node(&self) -> &GarageNode {
        self.nodes
            .iter()
            .find(|n| n.process.is_some())
            .expect("every garage node has been killed")
    }

    /// Polls `probe` on each node in turn (every 100 ms) until it answers `Ok` on all; panics
    /// naming `what`, the node and the last answer after [`STAGE_TIMEOUT`], or with the log of
    /// a node that exited.
    fn wait_on_every_node(
        &mut self,
        what: &str,
        mut probe: impl FnMut(&GarageNode) -> Result<(), String>,
    ) {
        let deadline = Instant::now() + STAGE_TIMEOUT;
        for index in 0..self.nodes.len() {
            loop {
                self.nodes[index].assert_running(index);
                let last = match probe(&self.nodes[index]) {
                    Ok(()) => break,
                    Err(last) => last,
                };
                if Instant::now() > deadline {
                    panic!(
                        "gave up waiting for {what} after {STAGE_TIMEOUT:?}; node {index} last \
                         answered: {last}\nits log ({}):\n{}",
                        self.nodes[index].log_path().display(),
                        self.log(index)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Writes node `index`'s `garage.toml` and starts `garage server` (not waiting for it).
fn spawn_node(
    binary: &Path,
    index: usize,
    rpc_secret: &str,
    admin_token: &str,
    replication_factor: usize,
) -> GarageNode {
    let dir = temp_dir(&format!("outpost-e2e-garage{index}."));
    let d = dir.path();
    let (rpc_port, s3_port, admin_port) = (free_port(), free_port(), free_port());
    let config = format!(
        "metadata_dir = \"{meta}\"\n\
         data_dir = \"{data}\"\n\
         db_engine = \"sqlite\"\n\
         metadata_fsync = false\n\
         data_fsync = false\n\
         replication_factor = {replication_factor}\n\
         rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
         rpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
         rpc_secret = \"{rpc_secret}\"\n\
         \n\
         [s3_api]\n\
         s3_region = \"{REGION}\"\n\
         api_bind_addr = \"127.0.0.1:{s3_port}\"\n\
         \n\
         [admin]\n\
         api_bind_addr = \"127.0.0.1:{admin_port}\"\n\
         admin_token = \"{admin_token}\"\n",
        meta = d.join("meta").display(),
        data = d.join("data").display(),
    );
    let config_path = d.join("garage.toml");
    std::fs::write(&config_path, config).unwrap();
    // It holds the cluster's `rpc_secret` and admin token.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut cmd = garage_command(binary);
    cmd.arg("-c")
        .arg(&config_path)
        .arg("server")
        .env("RUST_LOG", "garage=info")
        .env("NO_COLOR", "1");
    let process = Guarded::spawn(
        cmd,
        &d.join("garage.stdout"),
        &d.join("garage.log"),
        &format!("garage node {index} (rpc {rpc_port}, s3 {s3_port}, admin {admin_port})"),
    );
    GarageNode {
        process: Some(process),
        dir,
        rpc_port,
        s3_port,
        admin_port,
        id: String::new(),
    }
}

/// A `garage` command that only the test's config drives: the variables with which `garage`
/// reads a secret, token or RPC host from the environment (over the config) are removed.
fn garage_command(binary: &Path) -> Command {
    let mut cmd = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GARAGE_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// The value of row `name` in a `garage` table (`Key ID:   GK…`).
fn table_value(output: &str, name: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

/// `bytes` random bytes from the system's generator, as lower-case hex.
fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("random bytes");
    hex::encode(buf)
}

fn s3_curl(access_key_id: &str, secret_access_key: &str) -> Command {
    let mut cmd = Tool::Curl.command();
    cmd.arg("--aws-sigv4")
        .arg(format!("aws:amz:{REGION}:s3"))
        .arg("--user")
        .arg(format!("{access_key_id}:{secret_access_key}"));
    cmd
}

/// One signed S3 request with curl; `Err` when curl cannot reach the server.
fn s3_request(
    url: &str,
    access_key_id: &str,
    secret_access_key: &str,
    method: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<S3Response, String> {
    let payload = body.unwrap_or_default();
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, payload));
    let response_body = tempfile::NamedTempFile::new().expect("temp file for a response body");
    let mut cmd = s3_curl(access_key_id, secret_access_key);
    cmd.args(["-sS", "--max-time", "30", "-D", "-", "-o"])
        .arg(response_body.path())
        .arg("-H")
        .arg(format!("x-amz-content-sha256: {sha256}"));
    // No `-H "Expect:"` to drop curl's `Expect: 100-continue`: curl would sign the empty
    // header, which it does not send, and Garage refuses a signed header that is absent.
    if method == "HEAD" {
        // curl waits for a body after `-X HEAD`; `-I` sends HEAD and reads none
        cmd.arg("-I");
    } else {
        cmd.args(["-X", method]);
    }
    for (name, value) in headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    // Kept until curl has run.
    let request_body = body.map(|body| {
        let file = tempfile::NamedTempFile::new().expect("temp file for a request body");
        std::fs::write(file.path(), body).expect("write a request body");
        // `--data-binary` would send a form's content type, which S3 would store.
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            cmd.args(["-H", "Content-Type: application/octet-stream"]);
        }
        cmd.arg("--data-binary")
            .arg(format!("@{}", file.path().display()));
        file
    });
    cmd.arg(url);
    let out = run(&mut cmd);
    drop(request_body);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let block = text
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .ok_or_else(|| format!("curl printed no response headers: {text}"))?;
    let mut lines = block.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if method == "HEAD" {
        Vec::new() // `-I` writes the headers where the body would go
    } else {
        std::fs::read(response_body.path()).expect("read a response body")
    };
    Ok(S3Response {
        status,
        headers,
        body,
    })
}

static GARAGE_BIN: OnceLock<PathBuf> = OnceLock::new();

/// The `garage` binary: `$GARAGE_BIN`, else `garage` on `PATH`, else `$CARGO_HOME/bin/garage`
/// (`~/.cargo/bin/garage`); installed once with `cargo install --locked garage` when missing.
pub fn garage_binary() -> PathBuf {
    GARAGE_BIN
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("GARAGE_BIN") {
                let bin = PathBuf::from(bin);
                assert!(
                    bin.is_file(),
                    "GARAGE_BIN={} is not a file; install Garage with `cargo install --locked garage`",
                    bin.display()
                );
                return bin;
            }
            if let Some(bin) = find_garage() {
                return bin;
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            eprintln!(
                "garage: not found ($GARAGE_BIN, PATH, {}); installing it with \
                 `cargo {}` (about 11 minutes on 2 cores)…",
                cargo_bin_dir().join("garage").display(),
                GARAGE_INSTALL.join(" ")
            );
            let began = Instant::now();
            let status = Command::new(&cargo)
                .args(GARAGE_INSTALL)
                .status()
                .unwrap_or_else(|e| panic!("cannot run `cargo install --locked garage`: {e}"));
            assert!(
                status.success(),
                "`cargo install --locked garage` failed ({status}); the shared-store scenarios \
                 need Garage: install it by hand and set GARAGE_BIN to its path"
            );
            let bin = find_garage().unwrap_or_else(|| {
                panic!(
                    "`cargo install --locked garage` succeeded but no garage binary is on PATH \
                     or in {}; set GARAGE_BIN to its path",
                    cargo_bin_dir().display()
                )
            });
            eprintln!("garage: installed {} in {:?}", bin.display(), began.elapsed());
            bin
        })
        .clone()
}

/// `garage` on `PATH` or in cargo's bin dir.
fn find_garage() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(std::iter::once(cargo_bin_dir()))
        .map(|dir| dir.join("garage"))
        .find(|candidate| is_executable(candidate))
}

/// How the suite installs Garage: only the SQLite metadata engine (what the tests configure),
/// without LMDB, K2V and metrics, which made the default build about half as long again.
pub const GARAGE_INSTALL: &[&str] = &[
    "install",
    "--locked",
    "garage",
    "--no-default-features",
    "--features",
    "sqlite,bundled-libs",
];

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, else `~/.cargo/bin`.
fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
        .join("bin")
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
