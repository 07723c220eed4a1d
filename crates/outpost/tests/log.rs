//! The log never holds up a request: `outpost serve` with its stderr on a pipe that nobody
//! reads (a stalled journald) keeps answering, and counts the lines it had to drop. And what
//! it logs does reach stderr, the lines written at exit included.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use outpost_tests::outpost::Client;
use outpost_tests::wait::{wait_until, within, DEADLINE};

/// More requests, each logged, than the pipe (shrunk to one page) and the log writer's queue
/// (1 MiB, a few thousand lines) can hold.
const REQUESTS: usize = 12_000;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_never_holds_up_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve(dir.path(), Stdio::piped());
    // Held, never read: once full, every write to it blocks.
    let stderr = child.0.stderr.take().expect("outpost's stderr");
    rustix::pipe::fcntl_setpipe_size(&stderr, 4096).expect("shrink the pipe");
    let client = ready(&base).await;

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, url) = (client.clone(), format!("{base}/v2/"));
            tokio::spawn(async move {
                for i in 0..REQUESTS / CLIENTS {
                    let what = format!("request {i} of client {c} (the log's pipe is full)");
                    let reply = within(&what, Duration::from_secs(10), client.get(&url)).await;
                    assert_eq!(reply.status, StatusCode::OK, "{what}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let metrics = client.get(&format!("{base}/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let dropped: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("outpost_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no outpost_log_lines_dropped_total in\n{text}"))
        .parse()
        .unwrap();
    assert!(
        dropped >= 1.0,
        "{REQUESTS} requests with nobody reading the log, yet no line dropped:\n{text}"
    );
    drop(stderr);
}

/// Every request's access line reaches stderr (here a file), and so do the lines logged as
/// the process stops: the log writer's queue is written out before exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_reaches_stderr_up_to_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let stderr = std::fs::File::create(&log).unwrap();
    let (mut child, base) = serve(dir.path(), stderr.into());
    let client = ready(&base).await;
    const N: usize = 50;
    for i in 0..N {
        let reply = client.get(&format!("{base}/v2/?n={i}")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = within("outpost to exit after SIGTERM", DEADLINE, async {
        loop {
            if let Some(exit) = child.0.try_wait().unwrap() {
                break exit;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(exit.success(), "outpost exited with {exit}");
    let text = std::fs::read_to_string(&log).unwrap();
    let access = text
        .lines()
        .filter(|l| l.contains("outpost::access") && l.contains("path=/v2/ "))
        .count();
    assert!(
        access >= N,
        "{access} access lines for {N} requests to /v2/ in stderr:\n{text}"
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(
        text.contains("shutting down"),
        "the line logged at SIGTERM is missing; the log ends with {last:?}"
    );
}

/// The server runs on as many worker threads as it is told (`--worker-threads` over
/// `outpost.workerThreads`), and on one per core less one (at least one) when told nothing; its
/// "listening" line says how many its runtime has. A count out of range is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_the_worker_threads_it_is_given() {
    let cores = std::thread::available_parallelism().unwrap().get();
    for (file, flag, want) in [
        ("", None, cores.saturating_sub(1).max(1)),
        ("  workerThreads: 3\n", None, 3),
        ("  workerThreads: 3\n", Some("2"), 2),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr");
        let stderr = std::fs::File::create(&log).unwrap();
        let flags: Vec<&str> = flag
            .map(|n| vec!["--worker-threads", n])
            .unwrap_or_default();
        let (_child, base) = serve_with(dir.path(), stderr.into(), file, &flags);
        ready(&base).await;
        // The log writer writes out its lines in batches, a few milliseconds later.
        let listening = within("the \"listening\" line in stderr", DEADLINE, async {
            loop {
                let text = std::fs::read_to_string(&log).unwrap();
                if let Some(line) = text.lines().find(|l| l.contains("outpost is listening")) {
                    break line.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            listening.contains(&format!("workers={want}")),
            "expected {want} workers ({file:?}, flag {flag:?}, {cores} cores): {listening}"
        );
    }
    for bad in ["0", "257", "many"] {
        let out = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["serve", "--worker-threads", bad])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--worker-threads {bad}: {err}");
        assert!(err.contains("--worker-threads"), "{err}");
    }
}

/// Starts `outpost serve` on a free port with its data under `dir` and its stderr to `stderr`;
/// the process and its base URL.
fn serve(dir: &std::path::Path, stderr: Stdio) -> (KillOnDrop, String) {
    serve_with(dir, stderr, "", &[])
}

/// [`serve`] with `outpost:` keys added to its configuration file (`  key: value` lines) and
/// more command-line arguments.
fn serve_with(
    dir: &std::path::Path,
    stderr: Stdio,
    outpost_keys: &str,
    args: &[&str],
) -> (KillOnDrop, String) {
    let config = dir.join("outpost.yaml");
    std::fs::write(
        &config,
        format!("outpost:\n  cache:\n    minFree: \"0\"\n{outpost_keys}"),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.join("data"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start outpost");
    (KillOnDrop(child), format!("http://127.0.0.1:{port}"))
}

/// Waits until the outpost at `base` listens and its store is open; a client for it.
async fn ready(base: &str) -> Client {
    let addr = base.trim_start_matches("http://").to_owned();
    wait_until("outpost to listen", DEADLINE, || {
        TcpStream::connect(&addr).is_ok()
    })
    .await;
    let client = Client::new();
    let readyz = format!("{base}/readyz");
    within("outpost to be ready", DEADLINE, async {
        while client.get(&readyz).await.status != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    client
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
