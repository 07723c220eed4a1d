#!/usr/bin/env python3
"""push_image.py -- synthesize a one-layer OCI image of random bytes and push it to a registry.

Usage: push_image.py REGISTRY_URL REPO:TAG SIZE [--workdir DIR]
  SIZE: bytes, or with a K/M/G suffix (binary). The layer is an uncompressed tar holding one
  file of SIZE random bytes (a fresh random seed each time, so every run gives new, uncached
  digests). The config has the right rootfs.diff_ids; the manifest is an OCI image manifest.
  Blobs are pushed monolithically (POST, then PUT ?digest= with the body streamed from a file).
Prints "MANIFEST_DIGEST LAYER_DIGEST LAYER_SIZE" on stdout. Stdlib only.
"""
import hashlib, http.client, json, os, random, sys, tarfile, tempfile, urllib.parse

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_TAR = "application/vnd.oci.image.layer.v1.tar"


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    return int(float(s[:-1] if s[-1:] in "KMG" else s) * mult)


class HashWriter:
    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def write(self, b):
        self.h.update(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


class RandReader:
    def __init__(self, n, rng):
        self.left, self.rng = n, rng

    def read(self, k=-1):
        if k is None or k < 0 or k > self.left:
            k = self.left
        self.left -= k
        return self.rng.randbytes(k)


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"push_image: {method} {path} -> {r.status} {data[:300]!r}")
    return r


def push_blob(conn, repo, digest, body, size):
    r = request(conn, "POST", f"/v2/{repo}/blobs/uploads/")
    loc = urllib.parse.urlsplit(r.getheader("Location"))
    path = loc.path + ("?" + loc.query + "&" if loc.query else "?") + "digest=" + digest
    request(conn, "PUT", path, body=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})


def main():
    args = sys.argv[1:]
    workdir = None
    if "--workdir" in args:
        i = args.index("--workdir")
        workdir = args[i + 1]
        del args[i:i + 2]
    if len(args) != 3:
        sys.exit(__doc__)
    url, ref, size = args[0], args[1], parse_size(args[2])
    repo, tag = ref.rsplit(":", 1)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    rng = random.Random(os.urandom(16))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tar_path = os.path.join(tmp, "layer.tar")
        with open(tar_path, "wb") as raw:
            hw = HashWriter(raw)
            with tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                ti = tarfile.TarInfo("data/layer.bin")
                ti.size, ti.mode, ti.mtime = size, 0o644, 1700000000
                tf.addfile(ti, RandReader(size, rng))
        layer = "sha256:" + hw.h.hexdigest()
        layer_size = os.path.getsize(tar_path)
        with open(tar_path, "rb") as f:
            push_blob(conn, repo, layer, f, layer_size)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer]},
        "config": {}, "history": [{"created_by": "outpost bench/push_image.py"}],
    }, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    push_blob(conn, repo, config_digest, config, len(config))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": MT_TAR, "digest": layer, "size": layer_size}],
    }, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    request(conn, "PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
            headers={"Content-Type": MT_MANIFEST})
    print(manifest_digest, layer, layer_size)


if __name__ == "__main__":
    main()
