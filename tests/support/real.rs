//! Real software on loopback for the end-to-end suite: Docker Distribution upstreams, the built
//! `outpost` binary, a throw-away containerd, and skopeo as a client.
//!
//! - [`Registry`]: Debian's `docker-registry` (Distribution 2.8) with a generated config:
//!   filesystem storage in a temp dir, its own free port on 127.0.0.1, optional htpasswd (bcrypt)
//!   Basic auth, optional TLS with a CA and server certificate made by `rcgen`. Its access log
//!   (combined format, on stdout) is captured to a file and parsed by [`Registry::access_log`].
//!   [`Registry::stop`] and [`Registry::restart`] keep the data dir and port (offline scenarios).
//! - [`Outpost`]: `outpost serve --config FILE --listen 127.0.0.1:PORT --data-dir DIR`, started
//!   and awaited until `GET /v2/` answers 200, stderr captured to a file.
//!   The binary is `$OUTPOST_BIN` when set (`tests/e2e.sh` builds it and sets it); otherwise the
//!   suite runs `cargo build -p outpost --bin outpost` once and uses
//!   `$CARGO_TARGET_DIR/debug/outpost` (default `<workspace>/target/debug/outpost`).
//! - [`Containerd`]: a containerd daemon whose root, state, socket and config live in a temp dir
//!   (CRI disabled, native snapshotter: no mounts), driven with `ctr --hosts-dir`.
//! - [`skopeo_copy`]: `skopeo copy --preserve-digests docker://… oci:DIR`, returning the digests
//!   skopeo stored.
//!
//! Every process is killed and reaped on `Drop`, also when a test panics; every temp dir is
//! removed then.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use oci::Digest;

use crate::image::{Image, PushTarget};
use crate::tools::{describe, run, run_ok, Http, Tool};

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

pub(crate) fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir")
}

/// A child process killed and reaped when dropped.
pub(crate) struct Guarded {
    child: Child,
    what: String,
}

impl Guarded {
    pub(crate) fn spawn(mut command: Command, stdout: &Path, stderr: &Path, what: &str) -> Guarded {
        let out = std::fs::File::create(stdout).expect("create a log file");
        let err = std::fs::File::create(stderr).expect("create a log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({}): {e}", describe(&command)));
        Guarded {
            child,
            what: what.to_owned(),
        }
    }

    /// `Some(status)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for a child")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Polls `ready` every 100 ms until it is true, the process exits (panic with its log) or
/// `timeout` passes (panic).
pub(crate) fn wait_until(
    process: &mut Guarded,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.exited() {
            panic!(
                "{} exited ({status}) before it was ready; its log ({}):\n{}",
                process.what,
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if ready() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{} was not ready within {timeout:?}; its log ({}):\n{}",
                process.what,
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The HTTP status of `GET url` (certificates not verified), or `None` when nothing answers.
fn probe_status(url: &str) -> Option<u16> {
    probe_status_as(url, None)
}

/// Like [`probe_status`], presenting a client certificate and key when given.
fn probe_status_as(url: &str, client: Option<&(PathBuf, PathBuf)>) -> Option<u16> {
    let mut cmd = Tool::Curl.command();
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = run(cmd.args([
        "-s",
        "-k",
        "--max-time",
        "2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        url,
    ]));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|s| *s != 0)
}

/// A CA and a server certificate for 127.0.0.1, ::1 and localhost, as PEM files in a dir.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// A containers-style cert dir holding `ca.crt` (skopeo `--src-cert-dir`).
    pub cert_dir: PathBuf,
}

impl TlsFiles {
    /// Generates the CA and server certificate with `rcgen` into `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose, SanType,
        };
        std::fs::create_dir_all(dir).expect("create the TLS dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "outpost e2e test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params.self_signed(&ca_key).expect("self-sign the CA");

        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params
            .subject_alt_names
            .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("sign the server certificate");

        let files = TlsFiles {
            ca_pem: ca.pem(),
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server-key.pem"),
            cert_dir: dir.join("certdir"),
        };
        std::fs::write(&files.ca_file, &files.ca_pem).unwrap();
        std::fs::write(&files.cert_file, cert.pem()).unwrap();
        std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
        std::fs::create_dir_all(&files.cert_dir).unwrap();
        std::fs::write(files.cert_dir.join("ca.crt"), &files.ca_pem).unwrap();
        files
    }
}

/// How to run a [`Registry`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Require this user and password (htpasswd, bcrypt).
    pub htpasswd: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a fresh CA ([`Registry::ca_pem`]).
    pub tls: bool,
}

/// Debian's `docker-registry` (Docker Distribution 2.8) on 127.0.0.1.
pub struct Registry {
    // Fields drop in order: the process is killed before its dir is removed.
    process: Option<Guarded>,
    dir: tempfile::TempDir,
    port: u16,
    options: RegistryOptions,
    tls: Option<TlsFiles>,
    /// Access-log lines of earlier runs (before a restart).
    earlier_log: String,
}

/// One line of the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
}

impl Registry {
    /// Starts a registry and waits until `/v2/` answers (200, or 401 with htpasswd).
    pub fn start(options: RegistryOptions) -> Registry {
        let dir = temp_dir("outpost-e2e-registry.");
        let port = free_port();
        let tls = options
            .tls
            .then(|| TlsFiles::generate(&dir.path().join("tls")));
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            data.display()
        );
        if let Some(tls) = &tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert_file.display(),
                tls.key_file.display()
            ));
        }
        if let Some((user, pass)) = &options.htpasswd {
            let hash = bcrypt::hash(pass, 5).expect("bcrypt");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: outpost-e2e\n    path: {}\n",
                file.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = Registry {
            dir,
            port,
            options,
            tls,
            process: None,
            earlier_log: String::new(),
        };
        registry.restart();
        registry
    }

    /// Starts the registry again (after [`Registry::stop`]) on the same port and data dir.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "the registry is already running");
        let mut cmd = Tool::DockerRegistry.command();
        cmd.arg("serve").arg(self.dir.path().join("config.yml"));
        let mut process = Guarded::spawn(
            cmd,
            &self.access_log_path(),
            &self.app_log_path(),
            &format!("docker-registry on port {}", self.port),
        );
        let url = format!("{}/v2/", self.url());
        wait_until(
            &mut process,
            &self.app_log_path(),
            Duration::from_secs(20),
            || matches!(probe_status(&url), Some(200 | 401)),
        );
        self.process = Some(process);
    }

    /// Stops the registry (kill and reap); its data and port stay for [`Registry::restart`].
    pub fn stop(&mut self) {
        self.process = None;
        self.earlier_log
            .push_str(&std::fs::read_to_string(self.access_log_path()).unwrap_or_default());
        // Kept in `earlier_log` now: [`Registry::access_log`] must not count these lines twice.
        let _ = std::fs::write(self.access_log_path(), "");
        assert!(
            TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
                Duration::from_millis(300)
            )
            .is_err(),
            "the registry still listens on {} after it was stopped",
            self.port
        );
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The PEM of the CA that signed the registry's certificate (TLS only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// The CA file and containers-style cert dir (TLS only).
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.options
            .htpasswd
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// From now on, require Bearer tokens of `tokens` (Distribution's `auth.token`) instead of
    /// any htpasswd: restarts the registry on the same port and data (push first: pushing needs
    /// the old auth).
    pub fn require_tokens(&mut self, tokens: &crate::token_server::TokenServer) {
        let path = self.dir.path().join("config.yml");
        let config = std::fs::read_to_string(&path).unwrap();
        let config = match config.find("auth:\n") {
            Some(at) => config[..at].to_owned(),
            None => config,
        };
        std::fs::write(&path, config + &tokens.distribution_auth()).unwrap();
        self.options.htpasswd = None;
        self.stop();
        self.restart();
    }

    /// Pushes `image` as `repository:tag`, with this registry's credentials and CA.
    pub fn push(&self, image: &Image, repository: &str, tag: &str) {
        let url = self.url();
        image.push(&PushTarget {
            base_url: &url,
            repository,
            tag,
            basic_auth: self.credentials(),
            ca_file: self.tls.as_ref().map(|t| t.ca_file.as_path()),
        });
    }

    fn access_log_path(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    fn app_log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Every request the registry logged so far (across restarts), in order.
    pub fn access_log(&self) -> Vec<AccessEntry> {
        let current = std::fs::read_to_string(self.access_log_path()).unwrap_or_default();
        self.earlier_log
            .lines()
            .chain(current.lines())
            .filter_map(parse_access_line)
            .collect()
    }

    /// Successful blob GETs served so far: (count, bytes sent).
    pub fn blob_gets(&self) -> (usize, u64) {
        let gets: Vec<_> = self
            .access_log()
            .into_iter()
            .filter(|e| {
                e.method == "GET" && e.path.contains("/blobs/sha") && (200..300).contains(&e.status)
            })
            .collect();
        (gets.len(), gets.iter().map(|e| e.bytes).sum())
    }
}

/// Parses a combined-format line: `IP - user [date] "GET /path HTTP/1.1" 200 1234 "ref" "ua"`.
fn parse_access_line(line: &str) -> Option<AccessEntry> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut request = request.split_whitespace();
    let method = request.next()?.to_owned();
    let path = request.next()?.to_owned();
    let mut fields = rest.split_whitespace();
    let status = fields.next()?.parse().ok()?;
    let bytes = fields.next()?.parse().unwrap_or(0);
    Some(AccessEntry {
        method,
        path,
        status,
        bytes,
    })
}

static OUTPOST_BIN: OnceLock<PathBuf> = OnceLock::new();

/// The `outpost` binary: `$OUTPOST_BIN`, or built once with `cargo build -p outpost --bin outpost`.
pub fn outpost_binary() -> PathBuf {
    OUTPOST_BIN
        .get_or_init(|| {
            if let Some(bin) = std::env::var_os("OUTPOST_BIN") {
                let bin = PathBuf::from(bin);
                assert!(
                    bin.is_file(),
                    "OUTPOST_BIN={} is not a file; build it with `cargo build -p outpost --bin outpost`",
                    bin.display()
                );
                return bin;
            }
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("the tests crate lives in the workspace")
                .to_path_buf();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .current_dir(&workspace)
                .args(["build", "-p", "outpost", "--bin", "outpost"]);
            run_ok(&mut build);
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .map(|t| if t.is_relative() { workspace.join(t) } else { t })
                .unwrap_or_else(|| workspace.join("target"));
            let bin = target.join("debug").join("outpost");
            assert!(bin.is_file(), "cargo built outpost but {} is missing", bin.display());
            bin
        })
        .clone()
}

/// How to run an [`Outpost`] besides its config.
#[derive(Clone, Debug, Default)]
pub struct OutpostOptions {
    /// `--tls-cert` and `--tls-key`: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A data dir to use instead of a fresh one (to restart on the same store).
    pub data_dir: Option<PathBuf>,
    /// A client certificate and key the readiness probe presents (when `tls.clientCa` is set).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// `config_yaml` with `outpost.cache.minFree: 0` unless it sets one: the temp dirs share their
/// file system with the build, and what a test stores must not depend on how full the machine's
/// disk is (the default reserve, up to 1 GiB, passes blobs through unstored on a nearly full CI
/// disk).
fn no_disk_reserve(config_yaml: &str) -> String {
    use serde_yaml_ng::{Mapping, Value};
    fn section<'a>(map: &'a mut Mapping, key: &str) -> &'a mut Mapping {
        let entry = map
            .entry(Value::from(key))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if entry.is_null() {
            *entry = Value::Mapping(Mapping::new());
        }
        entry
            .as_mapping_mut()
            .unwrap_or_else(|| panic!("the test's configuration: `{key}` is not a mapping"))
    }
    let mut document: Value = serde_yaml_ng::from_str(config_yaml)
        .unwrap_or_else(|e| panic!("the test's configuration is not YAML: {e}\n{config_yaml}"));
    if document.is_null() {
        document = Value::Mapping(Mapping::new());
    }
    let root = document
        .as_mapping_mut()
        .expect("the test's configuration is a mapping");
    let cache = section(section(root, "outpost"), "cache");
    if !cache.contains_key("minFree") {
        cache.insert(Value::from("minFree"), Value::from("0"));
    }
    serde_yaml_ng::to_string(&document).expect("YAML out")
}

/// A running `outpost serve` on 127.0.0.1.
pub struct Outpost {
    // Fields drop in order: the process is killed before its dir is removed.
    process: Option<Guarded>,
    dir: tempfile::TempDir,
    port: u16,
    tls: bool,
    data_dir: PathBuf,
}

impl Outpost {
    /// `outpost serve --config FILE --listen 127.0.0.1:PORT --data-dir DIR` over plain HTTP.
    pub fn start(config_yaml: &str) -> Outpost {
        Outpost::start_with(config_yaml, OutpostOptions::default())
    }

    /// Like [`Outpost::start`], with TLS or a given data dir.
    pub fn start_with(config_yaml: &str, options: OutpostOptions) -> Outpost {
        let dir = temp_dir("outpost-e2e-outpost.");
        let config = dir.path().join("config.yaml");
        write_private(&config, &no_disk_reserve(config_yaml));
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let port = free_port();
        let mut cmd = Command::new(outpost_binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "info");
        if let Some((cert, key)) = &options.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let stderr = dir.path().join("outpost.log");
        let mut process = Guarded::spawn(
            cmd,
            &dir.path().join("outpost.stdout"),
            &stderr,
            &format!("outpost on port {port}"),
        );
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://127.0.0.1:{port}/v2/");
        // 401: up, and asking for the credentials an htpasswd file requires.
        wait_until(&mut process, &stderr, Duration::from_secs(30), || {
            matches!(
                probe_status_as(&url, options.client.as_ref()),
                Some(200 | 401)
            )
        });
        Outpost {
            dir,
            port,
            tls: options.tls.is_some(),
            data_dir,
            process: Some(process),
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The config file outpost was started with (for `outpost containerd-config --config`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// What outpost wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("outpost.log")).unwrap_or_default()
    }

    /// What outpost wrote to stderr, once its log writer has written out the lines it had
    /// queued: outpost writes its log in batches about 20 ms apart, so this waits until the file
    /// has not grown for 200 ms (at most 10 s). For assertions on what was, or was not, logged.
    pub fn settled_stderr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut log = self.stderr();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.stderr();
            if now.len() == log.len() || Instant::now() > deadline {
                return now;
            }
            log = now;
        }
    }

    /// Panics (with outpost's log) when the process has exited.
    pub fn assert_running(&mut self) {
        let log = self.stderr();
        if let Some(status) = self.process.as_mut().and_then(Guarded::exited) {
            panic!("outpost exited ({status}); its log:\n{log}");
        }
    }

    /// Stops outpost (kill and reap), keeping its data dir for a restart with
    /// [`OutpostOptions::data_dir`].
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Runs `outpost ARGS…` to completion (60 s at most) and returns (exit code, stderr).
    pub fn run_expect_exit(args: &[&str]) -> (i32, String) {
        let (code, stderr, _) = run_watching(args, None);
        (code, stderr)
    }

    /// Runs `outpost serve --config FILE --listen 127.0.0.1:PORT --data-dir DIR` and expects it
    /// to exit; returns (exit code, stderr, whether anything ever accepted a connection on PORT
    /// while it ran).
    pub fn serve_expect_exit(config_yaml: &str) -> (i32, String, bool) {
        let dir = temp_dir("outpost-e2e-refused.");
        let config = dir.path().join("config.yaml");
        write_private(&config, config_yaml);
        let port = free_port();
        let config = config.to_string_lossy().into_owned();
        let listen = format!("127.0.0.1:{port}");
        let data = dir.path().join("data").to_string_lossy().into_owned();
        run_watching(
            &[
                "serve",
                "--config",
                &config,
                "--listen",
                &listen,
                "--data-dir",
                &data,
            ],
            Some(port),
        )
    }
}

/// Writes a config file readable by its owner only (configs hold secrets; outpost warns otherwise).
fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn run_watching(args: &[&str], watch_port: Option<u16>) -> (i32, String, bool) {
    let dir = temp_dir("outpost-e2e-run.");
    let stderr = dir.path().join("stderr");
    let mut cmd = Command::new(outpost_binary());
    cmd.args(args);
    let what = format!("outpost {}", args.join(" "));
    let mut process = Guarded::spawn(cmd, &dir.path().join("stdout"), &stderr, &what);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut listened = false;
    let status = loop {
        if let Some(port) = watch_port {
            listened |= TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_millis(50),
            )
            .is_ok();
        }
        if let Some(status) = process.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "`{what}` did not exit within 60 s; stderr:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let code = status
        .code()
        .unwrap_or_else(|| panic!("`{what}` was killed by a signal ({status})"));
    let text = std::fs::read_to_string(&stderr).unwrap_or_default();
    (code, text, listened)
}

/// The stdout of `outpost ARGS…`, which must exit 0.
pub fn outpost_ok(args: &[&str]) -> String {
    let out = run_ok(Command::new(outpost_binary()).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throw-away containerd daemon (root, state, socket and config in a temp dir, CRI disabled).
pub struct Containerd {
    // Fields drop in order: the daemon is killed before its dir is removed.
    _process: Option<Guarded>,
    dir: tempfile::TempDir,
    /// How many hosts dirs [`Containerd::mirror_hosts_dir`] made (each gets its own).
    hosts_dirs: std::cell::Cell<usize>,
}

const CTR_NAMESPACE: &str = "outpost-e2e";

impl Containerd {
    /// Starts containerd and waits until `ctr version` answers.
    pub fn start() -> Containerd {
        Tool::Ctr.require();
        let dir = temp_dir("outpost-e2e-containerd.");
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\",\n\
               \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.aufs\",\n\
               \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.tracing.processor.v1.otlp\",\n\
               \"io.containerd.internal.v1.tracing\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"{debug}\"\n  level = \"info\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            debug = d.join("debug.sock").display(),
            opt = d.join("opt").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let mut cmd = Tool::Containerd.command();
        cmd.arg("--config").arg(d.join("config.toml"));
        let log = d.join("containerd.log");
        let mut process = Guarded::spawn(cmd, &d.join("containerd.stdout"), &log, "containerd");
        let containerd = Containerd {
            _process: None,
            dir,
            hosts_dirs: std::cell::Cell::new(0),
        };
        wait_until(&mut process, &log, Duration::from_secs(30), || {
            socket.exists()
                && run(containerd.ctr_command().arg("version"))
                    .status
                    .success()
        });
        Containerd {
            _process: Some(process),
            ..containerd
        }
    }

    fn ctr_command(&self) -> Command {
        let mut cmd = Tool::Ctr.command();
        cmd.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .arg("--namespace")
            .arg(CTR_NAMESPACE);
        cmd
    }

    /// Writes a hosts dir in which `registry_host` (e.g. `quay.io`) is mirrored to `mirror_url`
    /// (`http://127.0.0.1:PORT`), with capabilities pull and resolve, trusting `ca` when given.
    /// Returns the hosts dir (for `--hosts-dir`).
    pub fn mirror_hosts_dir(
        &self,
        registry_host: &str,
        mirror_url: &str,
        ca: Option<&Path>,
    ) -> PathBuf {
        let id = self.hosts_dirs.get() + 1;
        self.hosts_dirs.set(id);
        let hosts = self.dir.path().join(format!("certs.d-{id}"));
        let dir = hosts.join(registry_host);
        std::fs::create_dir_all(&dir).unwrap();
        let server = if registry_host == "docker.io" {
            "https://registry-1.docker.io".to_owned()
        } else {
            format!("https://{registry_host}")
        };
        let mut toml = format!(
            "server = \"{server}\"\n\n[host.\"{mirror_url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        );
        if let Some(ca) = ca {
            toml.push_str(&format!("  ca = \"{}\"\n", ca.display()));
        }
        std::fs::write(dir.join("hosts.toml"), toml).unwrap();
        hosts
    }

    /// `ctr images pull --hosts-dir DIR --snapshotter native [--platform P] [--user U:P] REF`;
    /// `Err(output)` when ctr fails.
    pub fn pull(
        &self,
        hosts_dir: &Path,
        reference: &str,
        platform: Option<&str>,
        user: Option<(&str, &str)>,
    ) -> Result<(), String> {
        let mut cmd = self.ctr_command();
        cmd.args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
            .arg(hosts_dir);
        if let Some(platform) = platform {
            cmd.args(["--platform", platform]);
        }
        if let Some((u, p)) = user {
            cmd.arg("--user").arg(format!("{u}:{p}"));
        }
        cmd.arg(reference);
        let out = run(&mut cmd);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}):\n{}{}",
                describe(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Like [`Containerd::pull`], panicking (with containerd's log tail) on failure.
    pub fn pull_ok(&self, hosts_dir: &Path, reference: &str, platform: Option<&str>) {
        if let Err(e) = self.pull(hosts_dir, reference, platform, None) {
            let log =
                std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(20).collect();
            panic!(
                "{e}\n--- containerd log (last lines, newest first) ---\n{}",
                tail.join("\n")
            );
        }
    }

    /// The digest containerd recorded for image `reference` (`ctr images ls`).
    pub fn image_digest(&self, reference: &str) -> Digest {
        let out = run_ok(self.ctr_command().args(["images", "ls"]));
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reference))
            .unwrap_or_else(|| {
                panic!("containerd has no image {reference}; `ctr images ls`:\n{text}")
            });
        let digest = line
            .split_whitespace()
            .find(|f| f.starts_with("sha256:"))
            .unwrap_or_else(|| panic!("no digest in `ctr images ls` line {line:?}"));
        digest.parse().expect("ctr printed a valid digest")
    }

    /// Every digest in containerd's content store (`ctr content ls -q`).
    pub fn content_digests(&self) -> BTreeSet<Digest> {
        let out = run_ok(self.ctr_command().args(["content", "ls", "-q"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse().expect("ctr printed a valid digest"))
            .collect()
    }

    /// Removes every image and all content, so the next pull fetches everything again.
    pub fn forget_everything(&self) {
        let out = run_ok(self.ctr_command().args(["images", "ls", "-q"]));
        for image in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
        {
            run_ok(self.ctr_command().args(["images", "rm", "--sync", image]));
        }
        for digest in self.content_digests() {
            run(self
                .ctr_command()
                .args(["content", "rm", &digest.to_string()]));
        }
        let snaps = run_ok(
            self.ctr_command()
                .args(["snapshots", "--snapshotter", "native", "ls"]),
        );
        for line in String::from_utf8_lossy(&snaps.stdout).lines().skip(1) {
            if let Some(key) = line.split_whitespace().next() {
                run(self
                    .ctr_command()
                    .args(["snapshots", "--snapshotter", "native", "rm", key]));
            }
        }
        assert!(
            self.content_digests().is_empty(),
            "containerd still holds content after removing everything"
        );
    }
}

/// How skopeo reaches the source registry.
#[derive(Clone, Debug, Default)]
pub struct SkopeoSource {
    /// `--src-creds USER:PASS`.
    pub creds: Option<(String, String)>,
    /// `--src-tls-verify=false`: HTTPS without verification, or plain HTTP.
    pub insecure: bool,
    /// `--src-cert-dir` (a dir holding `ca.crt`).
    pub cert_dir: Option<PathBuf>,
    /// `--all`: copy every platform of an index (else only linux/amd64).
    pub all: bool,
}

/// What skopeo stored in its OCI layout.
pub struct SkopeoPull {
    _dir: tempfile::TempDir,
    /// The digest of the top manifest (index with `all`, else the platform manifest).
    pub top: Digest,
    /// Every blob in the layout (manifests, configs, layers), each re-hashed and checked
    /// against its file name.
    pub blobs: BTreeSet<Digest>,
}

/// `skopeo copy --preserve-digests docker://SOURCE oci:DIR:latest` (with `--override-arch amd64`
/// unless `all`). `Err(stderr)` when skopeo fails.
pub fn skopeo_copy(source: &str, options: &SkopeoSource) -> Result<SkopeoPull, String> {
    let dir = temp_dir("outpost-e2e-skopeo.");
    let layout = dir.path().join("layout");
    let mut cmd = Tool::Skopeo.command();
    cmd.args([
        "--insecure-policy",
        "--override-os",
        "linux",
        "--override-arch",
        "amd64",
        "copy",
        "--retry-times",
        "0",
        "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers",
    ]);
    if options.insecure {
        cmd.arg("--src-tls-verify=false");
    }
    match &options.creds {
        Some((u, p)) => cmd.arg("--src-creds").arg(format!("{u}:{p}")),
        None => cmd.arg("--src-no-creds"),
    };
    if let Some(cert_dir) = &options.cert_dir {
        cmd.arg("--src-cert-dir").arg(cert_dir);
    }
    if options.all {
        cmd.arg("--all");
    }
    cmd.arg(format!("docker://{source}"))
        .arg(format!("oci:{}:latest", layout.display()));
    let out = run(&mut cmd);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("oci index.json"))
            .expect("index.json is JSON");
    let top = index["manifests"][0]["digest"]
        .as_str()
        .expect("index.json names a manifest")
        .parse()
        .expect("a valid digest in index.json");
    let mut blobs = BTreeSet::new();
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).expect("oci blobs dir") {
        let path = entry.unwrap().path();
        let (_, digest) = crate::image::file_digest(&path);
        assert_eq!(
            digest.hex(),
            path.file_name().unwrap().to_string_lossy(),
            "skopeo stored a blob whose content does not match its name"
        );
        blobs.insert(digest);
    }
    Ok(SkopeoPull {
        _dir: dir,
        top,
        blobs,
    })
}

/// Like [`skopeo_copy`], panicking with skopeo's stderr on failure.
pub fn skopeo_pull(source: &str, options: &SkopeoSource) -> SkopeoPull {
    skopeo_copy(source, options).unwrap_or_else(|e| panic!("{e}"))
}

/// GETs a manifest (Accept: every manifest type) and each blob with curl, asserting 200 and
/// that each blob body hashes to its digest; HEADs the manifest and checks its
/// `Docker-Content-Digest` and `Content-Length`. Returns the manifest body's digest.
pub fn curl_pull(
    base: &str,
    name: &str,
    reference: &str,
    blobs: &BTreeSet<Digest>,
    ca: Option<&Path>,
) -> Digest {
    let manifest = Http::get(format!("{base}/v2/{name}/manifests/{reference}"))
        .header("Accept", crate::image::ACCEPT_MANIFESTS)
        .ca_file(ca)
        .send();
    assert_eq!(
        manifest.status,
        200,
        "GET {base}/v2/{name}/manifests/{reference}: {}",
        manifest.text()
    );
    let (size, digest) = manifest.body_digest();
    let head = Http::new("HEAD", format!("{base}/v2/{name}/manifests/{reference}"))
        .header("Accept", crate::image::ACCEPT_MANIFESTS)
        .ca_file(ca)
        .send();
    assert_eq!(
        head.status, 200,
        "HEAD {base}/v2/{name}/manifests/{reference}"
    );
    assert_eq!(
        head.header("docker-content-digest"),
        Some(digest.to_string().as_str()),
        "HEAD {base}/v2/{name}/manifests/{reference}: Docker-Content-Digest"
    );
    assert_eq!(
        head.header("content-length"),
        Some(size.to_string().as_str()),
        "HEAD {base}/v2/{name}/manifests/{reference}: Content-Length"
    );
    for blob in blobs {
        let response = Http::get(format!("{base}/v2/{name}/blobs/{blob}"))
            .ca_file(ca)
            .send();
        assert_eq!(
            response.status,
            200,
            "GET {base}/v2/{name}/blobs/{blob}: {}",
            response.text()
        );
        assert_eq!(
            &response.body_digest().1,
            blob,
            "the body of blob {blob} from {base}"
        );
    }
    digest
}

/// Debian's `tinyproxy` on 127.0.0.1 (a site's HTTP proxy): `CONNECT` to any port, plain-HTTP
/// requests in absolute form, optional Basic credentials (`BasicAuth`), every request in its
/// log ([`Tinyproxy::requests`]).
pub struct Tinyproxy {
    process: Option<Guarded>,
    dir: tempfile::TempDir,
    port: u16,
    credentials: Option<(String, String)>,
}

impl Tinyproxy {
    /// Starts tinyproxy and waits until its port accepts connections.
    pub fn start(credentials: Option<(&str, &str)>) -> Tinyproxy {
        let dir = temp_dir("outpost-e2e-tinyproxy.");
        let port = free_port();
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\n\
             MaxClients 200\nAllow 127.0.0.1\nDisableViaHeader Yes\n",
            dir.path().join("tinyproxy.log").display()
        );
        if let Some((user, password)) = credentials {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let file = dir.path().join("tinyproxy.conf");
        std::fs::write(&file, config).unwrap();
        let mut cmd = Tool::Tinyproxy.command();
        cmd.arg("-d").arg("-c").arg(&file);
        let stderr = dir.path().join("tinyproxy.stderr");
        let mut process = Guarded::spawn(
            cmd,
            &dir.path().join("tinyproxy.stdout"),
            &stderr,
            &format!("tinyproxy on port {port}"),
        );
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_until(&mut process, &stderr, Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        Tinyproxy {
            process: Some(process),
            dir,
            port,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    /// `http://[user:password@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((user, password)) => format!("http://{user}:{password}@127.0.0.1:{}", self.port),
            None => self.url_without_credentials(),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url_without_credentials(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request tinyproxy logged so far: (method, target), the target `host:port` for
    /// `CONNECT` and the absolute URL otherwise.
    pub fn requests(&self) -> Vec<(String, String)> {
        let log =
            std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default();
        // `CONNECT   Dec 02 13:54:26.315 [26123]: Request (file descriptor 5): GET http://… HTTP/1.1`
        log.lines()
            .filter_map(|line| line.split_once("]: Request (file descriptor "))
            .filter_map(|(_, rest)| rest.split_once("): "))
            .filter_map(|(_, request)| {
                let mut parts = request.split_whitespace();
                Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
            .collect()
    }

    /// Stops the proxy (kill and reap): the site's proxy is down.
    pub fn stop(&mut self) {
        self.process = None;
    }
}

/// A throw-away Docker Engine (Debian's `docker.io`): `dockerd` with its own data root, exec
/// root, pid file, socket and containerd namespaces under a temp dir, `registry-mirrors`
/// pointing at a mirror (outpost), no iptables and no bridge (nothing is run, only pulled).
/// Stopped with SIGTERM (so it takes its containerd down with it), SIGKILL after 20 s.
pub struct Dockerd {
    process: Option<Guarded>,
    dir: tempfile::TempDir,
}

impl Dockerd {
    /// Starts dockerd with `mirror` (`http://127.0.0.1:PORT`) as its registry mirror and waits
    /// until `docker info` answers.
    pub fn start(mirror: &str) -> Dockerd {
        let dir = temp_dir("outpost-e2e-dockerd.");
        let d = dir.path();
        let host = mirror.split_once("://").map_or(mirror, |(_, h)| h);
        let config = serde_json::json!({
            "registry-mirrors": [mirror],
            "insecure-registries": [host],
        });
        std::fs::write(d.join("daemon.json"), config.to_string()).unwrap();
        let mut cmd = Tool::Dockerd.command();
        cmd.arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .args([
                "--iptables=false",
                "--bridge=none",
                "--containerd-namespace",
                "outpost-e2e-docker",
                "--containerd-plugins-namespace",
                "outpost-e2e-docker-plugins",
            ]);
        let log = d.join("dockerd.log");
        let mut process = Guarded::spawn(cmd, &d.join("dockerd.stdout"), &log, "dockerd");
        wait_until(&mut process, &log, Duration::from_secs(60), || {
            run(docker_command(d).arg("info")).status.success()
        });
        Dockerd {
            process: Some(process),
            dir,
        }
    }

    /// A `docker` command for this daemon.
    pub fn command(&self) -> Command {
        docker_command(self.dir.path())
    }

    /// `docker pull reference`; panics with the output when it fails.
    pub fn pull_ok(&self, reference: &str) {
        run_ok(self.command().args(["pull", reference]));
    }

    /// The `RepoDigests` of a pulled image (`name@sha256:…`).
    pub fn repo_digests(&self, reference: &str) -> Vec<String> {
        let out = run_ok(self.command().args([
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            reference,
        ]));
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

/// A `docker` command for the daemon of `dir` (Debian's client, `/usr/bin/docker`, when
/// installed: the one `.ci/run` installs, whatever else is on `PATH`).
fn docker_command(dir: &Path) -> Command {
    let debian = Path::new("/usr/bin/docker");
    let mut cmd = if debian.exists() {
        Command::new(debian)
    } else {
        Tool::Docker.command()
    };
    cmd.arg("-H")
        .arg(format!("unix://{}", dir.join("docker.sock").display()));
    cmd
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let Some(mut process) = self.process.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &process.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while process.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Guarded's drop kills it if it is still there.
    }
}
