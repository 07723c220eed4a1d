//! End to end with a site-wide shared store: a real Garage cluster (S3-compatible object store)
//! on 127.0.0.1, started by [`GarageCluster`] (three `garage server` processes, one zone each,
//! replication factor 3, bucket `outpost`, one key). For now the cluster itself: an object
//! written through one node is read back through another after a third was SIGKILLed. Run with
//! `bash tests/e2e.sh garage`, or
//! `cargo test -p outpost-tests --features e2e --test e2e_shared -- --test-threads=1 --nocapture`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use oci::Digest;
use outpost_tests::garage::GarageCluster;
use outpost_tests::image::{Image, ImageSpec};
use outpost_tests::real::{
    skopeo_copy, Containerd, Outpost, Registry, RegistryOptions, SkopeoSource,
};

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

/// The outpost configuration of one node: `upstream` as its external registry, the cluster's
/// bucket through Garage node `node` as its shared store.
fn node_config(upstream: &Registry, garage: &GarageCluster, node: usize) -> String {
    format!(
        "stylus:\n  registryCredentials:\n    domain: {}\n    insecure: true\n\
         outpost:\n  sharedStore:\n    endpoint: {}\n    region: {}\n    bucket: {}\n    \
         accessKeyId: {}\n    secretAccessKey: {}\n    prefix: site-a/\n    timeout: 30s\n",
        upstream.host(),
        garage.s3_endpoint(node),
        garage.region(),
        garage.bucket(),
        garage.access_key_id(),
        garage.secret_access_key()
    )
}

fn every_digest(image: &Image) -> BTreeSet<Digest> {
    let mut set = image.blob_digests();
    set.insert(image.digest().clone());
    set
}

fn blob_key(digest: &Digest) -> String {
    format!("site-a/blobs/sha256/{}", digest.hex())
}

fn skopeo() -> SkopeoSource {
    SkopeoSource {
        insecure: true,
        ..SkopeoSource::default()
    }
}

/// The scenario: outposts A and B with separate data dirs share a three-node Garage
/// cluster; skopeo pulls through A; the upstream stops; B pulls by tag and by digest (skopeo and
/// ctr); a Garage node is killed; an empty outpost C still pulls by digest; an object
/// overwritten with wrong bytes is not served as good by a fresh outpost D.
#[test]
fn nodes_share_a_garage_bucket_through_upstream_and_garage_node_failures() {
    let mut garage = GarageCluster::start(3);
    let mut upstream = Registry::start(RegistryOptions::default());
    let image = Image::build(&ImageSpec::small(83));
    upstream.push(&image, "quay.io/e2e/shared", "v1");
    let by_tag = "quay.io/e2e/shared:v1".to_owned();
    let by_digest = format!("quay.io/e2e/shared@{}", image.digest());

    let a = Outpost::start(&node_config(&upstream, &garage, 0));
    let b = Outpost::start(&node_config(&upstream, &garage, 1));
    let via_a = skopeo_copy(&format!("{}/{by_tag}", a.host()), &skopeo()).unwrap();
    assert_eq!(&via_a.top, image.digest());
    assert_eq!(via_a.blobs, every_digest(&image));

    // A copies blobs, manifest and tag record to the bucket in the background.
    let mut keys: Vec<String> = every_digest(&image).iter().map(blob_key).collect();
    keys.push("site-a/repositories/quay.io/e2e/shared/_tags/v1".to_owned());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !keys.iter().all(|k| garage.get(1, k).status == 200) {
        assert!(
            Instant::now() < deadline,
            "A's uploads never landed:\n{}",
            a.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (gets_before, _) = upstream.blob_gets();
    upstream.stop();

    for reference in [&by_tag, &by_digest] {
        let via_b = skopeo_copy(&format!("{}/{reference}", b.host()), &skopeo())
            .unwrap_or_else(|e| panic!("skopeo {reference} through B: {e}\n{}", b.stderr()));
        assert_eq!(&via_b.top, image.digest(), "skopeo {reference} through B");
        assert_eq!(via_b.blobs, every_digest(&image));
    }
    let containerd = Containerd::start();
    let hosts = containerd.mirror_hosts_dir("quay.io", &b.url(), None);
    for reference in [&by_tag, &by_digest] {
        containerd.forget_everything();
        containerd.pull_ok(&hosts, reference, None);
        assert_eq!(
            &containerd.image_digest(reference),
            image.digest(),
            "ctr {reference}"
        );
        assert_eq!(containerd.content_digests(), every_digest(&image));
    }

    garage.kill(2);
    let c = Outpost::start(&node_config(&upstream, &garage, 1));
    let via_c = skopeo_copy(&format!("{}/{by_digest}", c.host()), &skopeo()).unwrap_or_else(|e| {
        panic!(
            "skopeo through C with a Garage node down: {e}\n{}",
            c.stderr()
        )
    });
    assert_eq!(&via_c.top, image.digest());
    assert_eq!(via_c.blobs, every_digest(&image));

    // The layer's object gets wrong bytes of the same length: a fresh node must not serve it.
    let layer = image.manifests[0].layers[0].clone();
    let good = garage.get(0, &blob_key(&layer));
    assert_eq!(good.status, 200);
    let mut wrong = good.body.clone();
    wrong[0] ^= 0xff;
    let put = garage.put(0, &blob_key(&layer), &wrong, &[]);
    assert_eq!(put.status, 200, "{}", put.text());
    let d = Outpost::start(&node_config(&upstream, &garage, 0));
    let via_d = skopeo_copy(&format!("{}/{by_digest}", d.host()), &skopeo());
    assert!(via_d.is_err(), "a corrupt layer was served as good");
    let log = d.settled_stderr();
    assert!(
        log.contains("does not match its digest"),
        "D did not report the corrupt object:\n{log}"
    );
    // Nothing of this came from the upstream after it stopped.
    assert_eq!(
        upstream.blob_gets().0,
        gets_before,
        "blob GETs upstream after it stopped: {:#?}",
        upstream.access_log()
    );
}
