//! outpost killed with SIGKILL in the middle of a blob fill, restarted on the same data dir: no
//! partial blob is ever served and the next pull completes. And SIGTERM with a transfer in
//! flight: no new connections, the transfer completes, a clean exit.
//!
//! The fake upstream holds the blob body part-way (`stall_blobs_after`) until released, so "in
//! the middle" does not depend on how fast the machine is; every wait names what it waits for
//! and gives up after a deadline.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use http::StatusCode;
use outpost_tests::fake::FakeRegistry;
use outpost_tests::outpost::Client;
use outpost_tests::wait::{wait_for, wait_until, within, DEADLINE};

struct Server {
    child: Child,
    url: String,
    /// Where the process's stderr goes, for failure messages.
    log: PathBuf,
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Starts `outpost serve` and waits until it accepts connections on `port`.
async fn serve(config: &Path, data_dir: &Path, port: u16) -> Server {
    let log = data_dir.with_extension(format!("{port}.{}.stderr", std::process::id()));
    let stderr = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log)
        .expect("a file for outpost's stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start outpost");
    let mut server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let what = format!("outpost to listen on 127.0.0.1:{port}");
    wait_until(&what, DEADLINE, || {
        if let Some(status) = server.child.try_wait().expect("outpost's status") {
            panic!(
                "outpost exited ({status}) before listening:\n{}",
                server.log()
            );
        }
        accepts_connections(port)
    })
    .await;
    server
}

/// Whether the upstream has sent `at` bytes of blob body (and holds); if not, what it has sent
/// and what outpost logged (a fill passed through, say).
fn held(fake: &FakeRegistry, at: u64, server: &Server) -> Result<(), String> {
    match fake.blob_bytes_sent() {
        sent if sent == at => Ok(()),
        sent => Err(format!(
            "{sent} bytes sent; outpost's log: {}",
            server.log()
        )),
    }
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

/// A configuration whose external registry is `fake` under the prefix `p`. `minFree: 0`: the
/// temp dir shares its file system with the build, and a nearly full disk must not turn the
/// fill into a pass-through (the default reserve is up to 1 GiB).
fn write_config(dir: &Path, fake: &FakeRegistry) -> std::path::PathBuf {
    let config = dir.join("outpost.yaml");
    std::fs::write(
        &config,
        format!(
            "stylus:\n  registryCredentials:\n    domain: {}/p\n    insecure: true\n\
             outpost:\n  cache:\n    minFree: \"0\"\n",
            fake.host()
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_fill_leaves_no_partial_blob() {
    let fake = FakeRegistry::start().await;
    let len = 32u64 << 20;
    let digest = fake.add_large_blob("p/quay.io/big/app", len, 11);
    // The upstream sends the first 4 MiB and then holds the body: the fill is half done for as
    // long as the test needs, however fast or slow the machine.
    let held_at = 4u64 << 20;
    fake.stall_blobs_after(held_at);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake);
    let data_dir = dir.path().join("data");
    let port = free_port();
    let path = format!("/v2/quay.io/big/app/blobs/{digest}");

    let mut server = serve(&config, &data_dir, port).await;
    let url = format!("{}{path}", server.url);
    let client = Client::new();
    let mut pull = within(
        "the response headers of the first pull",
        DEADLINE,
        client.open(&url, &[]),
    )
    .await;
    assert_eq!(pull.status, StatusCode::OK);
    // outpost serves what it has written to its ingest file: 1 MiB received means the fill is
    // writing one.
    within(
        "the first MiB of the blob",
        DEADLINE,
        pull.read_at_least(1 << 20),
    )
    .await
    .expect("the first MiB of the blob");
    wait_for("the upstream to send 4 MiB and hold", DEADLINE, || {
        held(&fake, held_at, &server)
    })
    .await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let interrupted = within("the end of the interrupted pull", DEADLINE, pull.finish()).await;
    assert!(
        interrupted.body.is_err(),
        "the interrupted pull ended cleanly"
    );
    let ingest = files_under(&data_dir.join("ingest"));
    assert!(!ingest.is_empty(), "no partial file was being written");
    assert!(files_under(&data_dir.join("blobs")).is_empty());

    fake.release_blobs();
    fake.clear_requests();
    let server = serve(&config, &data_dir, port).await;
    let url = format!("{}{path}", server.url);
    let complete = within(
        "the pull after the restart",
        DEADLINE,
        Client::new().stream(&url, &[]),
    )
    .await;
    assert_eq!(complete.status, StatusCode::OK);
    assert_eq!(complete.body.unwrap(), (digest.clone(), len));
    assert_eq!(fake.requests_matching("GET", &digest.to_string()).len(), 1);

    // The commit (fsync, rename) finishes after the client has its last byte.
    let blobs = data_dir.join("blobs");
    let stored = wait_for(
        "the blob to be committed under data/blobs",
        DEADLINE,
        || {
            let stored = files_under(&blobs);
            if stored.is_empty() {
                Err(server.log())
            } else {
                Ok(stored)
            }
        },
    )
    .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    // The old process's temp file (named with its pid) was removed when the store reopened.
    assert!(
        files_under(&data_dir.join("ingest")).is_empty(),
        "the partial file survived the restart: {:?}",
        files_under(&data_dir.join("ingest"))
    );
    assert!(stored[0].ends_with(digest.hex()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_transfers_finish() {
    let fake = FakeRegistry::start().await;
    let len = 16u64 << 20;
    let digest = fake.add_large_blob("p/quay.io/big/app", len, 12);
    // The upstream holds the body after 2 MiB: the transfer is in flight until it is released.
    let held_at = 2u64 << 20;
    fake.stall_blobs_after(held_at);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake);
    let port = free_port();
    let mut server = serve(&config, &dir.path().join("data"), port).await;
    let url = format!("{}/v2/quay.io/big/app/blobs/{digest}", server.url);
    let client = Client::new();
    let mut pull = within("the response headers", DEADLINE, client.open(&url, &[])).await;
    assert_eq!(pull.status, StatusCode::OK);
    within(
        "the first MiB of the blob",
        DEADLINE,
        pull.read_at_least(1 << 20),
    )
    .await
    .expect("the first MiB of the blob");
    wait_for("the upstream to send 2 MiB and hold", DEADLINE, || {
        held(&fake, held_at, &server)
    })
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // New connections are refused while the transfer in flight (held by the upstream) is not
    // done, and the process is still there serving it.
    wait_until(
        "outpost to stop accepting connections after SIGTERM",
        DEADLINE,
        || !accepts_connections(port),
    )
    .await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "outpost exited with a transfer in flight:\n{}",
        server.log()
    );
    assert_eq!(fake.blob_bytes_sent(), held_at);
    // The upstream goes on: the transfer completes, then outpost exits cleanly.
    fake.release_blobs();
    let pulled = within("the rest of the transfer", DEADLINE, pull.finish()).await;
    assert_eq!(pulled.status, StatusCode::OK);
    assert_eq!(pulled.body.unwrap(), (digest, len));
    let exit = wait_for("outpost to exit after SIGTERM", DEADLINE, || {
        server.child.try_wait().unwrap().ok_or("still running")
    })
    .await;
    assert!(
        exit.success(),
        "outpost exited with {exit}:\n{}",
        server.log()
    );
}
