//! The log never holds up a request: `outpost serve` with its stderr on a pipe that nobody
//! reads (a stalled journald) keeps answering, and counts the lines it had to drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use outpost_tests::outpost::Client;
use outpost_tests::wait::{wait_until, within, DEADLINE};

/// More requests, each logged, than the pipe (shrunk to one page) and the log writer's queue
/// (4096 lines) can hold.
const REQUESTS: usize = 6000;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_never_holds_up_requests() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.yaml");
    std::fs::write(&config, "outpost:\n  cache:\n    minFree: \"0\"\n").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start outpost");
    // Held, never read: once full, every write to it blocks.
    let stderr = child.stderr.take().expect("outpost's stderr");
    rustix::pipe::fcntl_setpipe_size(&stderr, 4096).expect("shrink the pipe");
    let _kill = KillOnDrop(child);

    let base = format!("http://127.0.0.1:{port}");
    wait_until("outpost to listen", DEADLINE, || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let client = Client::new();
    let ready = format!("{base}/readyz");
    within("outpost to be ready", DEADLINE, async {
        while client.get(&ready).await.status != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

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

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
