//! End to end with a site-wide shared store: a real Garage cluster (S3-compatible object store)
//! on 127.0.0.1, started by [`GarageCluster`] (three `garage server` processes, one zone each,
//! replication factor 3, bucket `outpost`, one key). For now the cluster itself: an object
//! written through one node is read back through another after a third was SIGKILLed. Run with
//! `bash tests/e2e.sh garage`, or
//! `cargo test -p outpost-tests --features e2e --test e2e_shared -- --test-threads=1 --nocapture`.

use outpost_tests::garage::GarageCluster;

/// `len` bytes that are not all alike (a repeating pattern would hide misplaced blocks).
fn patterned_bytes(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            // xorshift32
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

#[test]
fn a_three_node_garage_cluster_stores_and_survives_a_node_loss() {
    let mut garage = GarageCluster::start(3);
    eprintln!(
        "garage: 3 nodes up, bucket and key ready in {:?}",
        garage.startup_time()
    );

    // 3 MiB and a bit: several of Garage's 1 MiB blocks, the last one partial.
    let body = patterned_bytes((3 << 20) + 12_345);
    let put = garage.put(0, "smoke/object", &body, &[]);
    assert_eq!(put.status, 200, "PUT through node 0: {}", put.text());

    garage.kill(2);

    // Takes seconds (6.5 s here): Garage asks the dead node for a block first and only moves on
    // once its peering loop (a ping every 15 s) finds the connection broken.
    let get = garage.get(1, "smoke/object");
    assert_eq!(
        get.status,
        200,
        "GET through node 1 with node 2 down: {}",
        get.text()
    );
    assert_eq!(get.body.len(), body.len(), "the length read back");
    assert!(
        get.body == body,
        "the bytes read back differ from those written"
    );
    assert_eq!(
        get.header("etag"),
        put.header("etag"),
        "the ETag of the PUT and of the GET"
    );
}
