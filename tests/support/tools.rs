//! Finding the real programs the end-to-end suite drives, and running them.
//!
//! Every tool is looked up on `PATH` (plus `/usr/sbin` and `/sbin`, where Debian puts some
//! daemons). A missing tool is a test failure whose message names the Debian package and the
//! command that installs it; the suite never skips silently.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The command that installs everything the end-to-end suite needs.
pub const INSTALL_HINT: &str =
    "sudo apt-get install -y --no-install-recommends docker-registry skopeo containerd curl tinyproxy docker.io \
     (or run `bash tests/e2e.sh`, which installs what is missing and runs the suite)";

/// A program the end-to-end suite runs, and the Debian package that ships it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Docker Distribution 2.8, the upstream registry (`/usr/bin/docker-registry`).
    DockerRegistry,
    Skopeo,
    Ctr,
    Containerd,
    Curl,
    /// A site's HTTP proxy.
    Tinyproxy,
    /// Docker Engine's daemon and client (Debian's `docker.io`).
    Dockerd,
    Docker,
}

impl Tool {
    /// The executable's file name.
    pub fn binary(self) -> &'static str {
        match self {
            Tool::DockerRegistry => "docker-registry",
            Tool::Skopeo => "skopeo",
            Tool::Ctr => "ctr",
            Tool::Containerd => "containerd",
            Tool::Curl => "curl",
            Tool::Tinyproxy => "tinyproxy",
            Tool::Dockerd => "dockerd",
            Tool::Docker => "docker",
        }
    }

    /// The Debian package that ships it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::DockerRegistry => "docker-registry",
            Tool::Skopeo => "skopeo",
            Tool::Ctr | Tool::Containerd => "containerd",
            Tool::Curl => "curl",
            Tool::Tinyproxy => "tinyproxy",
            Tool::Dockerd | Tool::Docker => "docker.io",
        }
    }

    /// The absolute path of the tool, or `None` when it is not installed.
    pub fn find(self) -> Option<PathBuf> {
        let name = self.binary();
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    }

    /// The absolute path of the tool; panics with the install command when it is missing.
    pub fn require(self) -> PathBuf {
        self.find().unwrap_or_else(|| {
            panic!(
                "the end-to-end suite needs `{}` (Debian package `{}`), which is not installed.\n\
                 Install it with: sudo apt-get install -y {}\n\
                 or everything at once: {INSTALL_HINT}",
                self.binary(),
                self.package(),
                self.package()
            )
        })
    }

    /// A `Command` for the tool (panics with the install command when it is missing).
    pub fn command(self) -> Command {
        Command::new(self.require())
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `command` to completion and returns its output; panics (with the command line, exit
/// status, stdout and stderr) when it fails. For tools whose failure is the test's failure.
pub fn run_ok(command: &mut Command) -> Output {
    let output = run(command);
    if !output.status.success() {
        panic!(
            "command failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            describe(command),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// Runs `command` to completion and returns its output whatever the exit status.
pub fn run(command: &mut Command) -> Output {
    command
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(command)))
}

/// The command line, for failure messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One HTTP request made with `curl` (plain HTTP or HTTPS with a CA file; Basic auth).
///
/// The suite uses curl both as a *client* of outpost (the host-in-path form a user types) and to
/// push synthesized images into docker-registry. The response body goes to a temp file, so a
/// 200 MiB blob is never held in memory.
#[derive(Clone, Debug, Default)]
pub struct Http {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub basic_auth: Option<(String, String)>,
    /// A PEM CA file to trust (`--cacert`).
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (`-k`).
    pub insecure: bool,
    /// Request body streamed from this file (`--upload-file`).
    pub body_file: Option<PathBuf>,
    /// Small request body.
    pub body: Option<Vec<u8>>,
}

/// What curl received.
pub struct HttpResponse {
    pub status: u16,
    /// Header names lower-cased, in the order received (of the last response block).
    pub headers: Vec<(String, String)>,
    body: tempfile::NamedTempFile,
}

impl Http {
    pub fn get(url: impl Into<String>) -> Http {
        Http {
            method: "GET".to_owned(),
            url: url.into(),
            ..Http::default()
        }
    }

    pub fn new(method: &str, url: impl Into<String>) -> Http {
        Http {
            method: method.to_owned(),
            url: url.into(),
            ..Http::default()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Http {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn basic_auth(mut self, auth: Option<(&str, &str)>) -> Http {
        self.basic_auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
        self
    }

    pub fn ca_file(mut self, ca: Option<&Path>) -> Http {
        self.ca_file = ca.map(Path::to_path_buf);
        self
    }

    /// Sends the request; panics only when curl itself cannot run or reach the server.
    pub fn send(&self) -> HttpResponse {
        let body = tempfile::NamedTempFile::new().expect("temp file for a response body");
        let mut cmd = Tool::Curl.command();
        cmd.args(["-sS", "--max-time", "600", "-D", "-", "-o"])
            .arg(body.path())
            // no `Expect: 100-continue` round trip (and no 100 block in the headers)
            .args(["-H", "Expect:"]);
        if self.method == "HEAD" {
            // curl waits for a body after `-X HEAD`; `-I` sends HEAD and reads none
            cmd.arg("-I");
        } else {
            cmd.args(["-X", &self.method]);
        }
        for (name, value) in &self.headers {
            cmd.arg("-H").arg(format!("{name}: {value}"));
        }
        if let Some((user, pass)) = &self.basic_auth {
            cmd.arg("-u").arg(format!("{user}:{pass}"));
        }
        if let Some(ca) = &self.ca_file {
            cmd.arg("--cacert").arg(ca);
        }
        if self.insecure {
            cmd.arg("-k");
        }
        let mut body_tmp = None;
        if let Some(file) = &self.body_file {
            cmd.arg("--upload-file").arg(file);
        } else if let Some(bytes) = &self.body {
            let tmp = tempfile::NamedTempFile::new().expect("temp file for a request body");
            std::fs::write(tmp.path(), bytes).expect("write request body");
            cmd.arg("--data-binary")
                .arg(format!("@{}", tmp.path().display()));
            body_tmp = Some(tmp);
        }
        cmd.arg(&self.url);
        let out = run_ok(&mut cmd);
        drop(body_tmp);
        let text = String::from_utf8_lossy(&out.stdout);
        // the last header block is the final response
        let block = text
            .split("\r\n\r\n")
            .filter(|b| b.starts_with("HTTP/"))
            .last()
            .unwrap_or_else(|| {
                panic!(
                    "curl {} {} printed no response headers: {text}",
                    self.method, self.url
                )
            });
        let mut lines = block.lines();
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?} from {}", self.url));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        HttpResponse {
            status,
            headers,
            body,
        }
    }
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The whole body (only for small bodies: manifests, error JSON).
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.body.path()).expect("read response body")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// The body's length and sha256 digest, read from disk in chunks.
    pub fn body_digest(&self) -> (u64, oci::Digest) {
        crate::image::file_digest(self.body.path())
    }
}
