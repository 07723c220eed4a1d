//! outpost killed with SIGKILL in the middle of a blob fill, restarted on the same data dir: no
//! partial blob is ever served and the next pull completes.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use outpost_tests::fake::FakeRegistry;
use outpost_tests::outpost::Client;

struct Server {
    child: Child,
    url: String,
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

async fn serve(config: &Path, data_dir: &Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start outpost");
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("outpost did not listen on {port}");
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

/// A configuration whose external registry is `fake` under the prefix `p`.
fn write_config(dir: &Path, fake: &FakeRegistry) -> std::path::PathBuf {
    let config = dir.join("outpost.yaml");
    std::fs::write(
        &config,
        format!(
            "stylus:\n  registryCredentials:\n    domain: {}/p\n    insecure: true\n",
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
    fake.throttle_blobs(Some(8 << 20));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake);
    let data_dir = dir.path().join("data");
    let port = free_port();
    let path = format!("/v2/quay.io/big/app/blobs/{digest}");

    let mut server = serve(&config, &data_dir, port).await;
    let url = format!("{}{path}", server.url);
    let client = Client::new();
    let pull = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move { client.stream(&url, &[]).await }
    });
    while fake.blob_bytes_sent() < 4 << 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let interrupted = pull.await.unwrap();
    assert!(
        interrupted.body.is_err(),
        "the interrupted pull ended cleanly"
    );
    let ingest = files_under(&data_dir.join("ingest"));
    assert!(!ingest.is_empty(), "no partial file was being written");
    assert!(files_under(&data_dir.join("blobs")).is_empty());

    fake.throttle_blobs(None);
    fake.clear_requests();
    let server = serve(&config, &data_dir, port).await;
    let url = format!("{}{path}", server.url);
    let complete = Client::new().stream(&url, &[]).await;
    assert_eq!(complete.status, StatusCode::OK);
    assert_eq!(complete.body.unwrap(), (digest.clone(), len));
    assert_eq!(fake.requests_matching("GET", &digest.to_string()).len(), 1);

    // The commit (fsync, rename) finishes after the client has its last byte.
    let mut stored = files_under(&data_dir.join("blobs"));
    for _ in 0..500 {
        if !stored.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = files_under(&data_dir.join("blobs"));
    }
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
    fake.throttle_blobs(Some(8 << 20));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake);
    let port = free_port();
    let mut server = serve(&config, &dir.path().join("data"), port).await;
    let url = format!("{}/v2/quay.io/big/app/blobs/{digest}", server.url);
    let pull = tokio::spawn(async move { Client::new().stream(&url, &[]).await });
    while fake.blob_bytes_sent() < 2 << 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // New connections are refused at once; the transfer in flight completes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "still accepting after SIGTERM"
    );
    let pulled = pull.await.unwrap();
    assert_eq!(pulled.body.unwrap(), (digest, len));
    let exit = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "outpost exited with {exit}");
}
