#!/usr/bin/env python3
"""tags.py -- many tags of one tiny image: push them to a registry, or fetch each one once.

Usage: tags.py push REGISTRY_URL REPO COUNT [THREADS]
         pushes a tiny config and a one-file layer (a few hundred bytes) to REPO, then PUTs COUNT
         OCI manifests by tag, t0 .. t<COUNT-1>, on THREADS (default 8) keep-alive connections.
         Each manifest names the same config and layer and carries its tag as an annotation,
         so the COUNT manifests are COUNT distinct small documents (about 500 bytes each).
         Prints "SECONDS" (the manifest PUTs only).
       tags.py get REGISTRY_URL REPO COUNT [THREADS]
         GETs every manifest by tag once (Accept: the OCI manifest type) on THREADS keep-alive
         connections and checks each body's digest. Prints "SECONDS OK" (OK: answers that were
         200 with the right bytes; exits 1 if any was not).
       tags.py digest REPO TAG
         prints the digest of that tag's manifest.
The content is deterministic (same REPO, same digests): `get` knows what each tag must be.
Stdlib only.
"""
import hashlib
import http.client
import io
import json
import sys
import tarfile
import threading
import time
import urllib.parse

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_TAR = "application/vnd.oci.image.layer.v1.tar"


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layer_bytes():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        data = b"outpost bench tags layer\n"
        ti = tarfile.TarInfo("data/tags.txt")
        ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
        tf.addfile(ti, io.BytesIO(data))
    return out.getvalue()


LAYER = layer_bytes()
CONFIG = json.dumps({
    "architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [sha(LAYER)]},
    "config": {}, "history": [{"created_by": "outpost bench/tags.py"}],
}, sort_keys=True).encode()


def manifest(tag):
    return json.dumps({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": sha(CONFIG), "size": len(CONFIG)},
        "layers": [{"mediaType": MT_TAR, "digest": sha(LAYER), "size": len(LAYER)}],
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }, sort_keys=True).encode()


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r, data


def must(conn, method, path, body=None, headers=None):
    r, data = request(conn, method, path, body, headers)
    if r.status >= 300:
        sys.exit(f"tags.py: {method} {path} -> {r.status} {data[:300]!r}")
    return r


def push_blob(conn, repo, body):
    r = must(conn, "POST", f"/v2/{repo}/blobs/uploads/")
    loc = urllib.parse.urlsplit(r.getheader("Location"))
    path = loc.path + ("?" + loc.query + "&" if loc.query else "?") + "digest=" + sha(body)
    must(conn, "PUT", path, body=body, headers={"Content-Type": "application/octet-stream"})


def on_threads(url, count, threads, work):
    """Runs work(conn, i) for i in 0..count-1 on `threads` connections; returns (seconds, errors)."""
    u = urllib.parse.urlsplit(url)
    nxt = [0]
    lock = threading.Lock()
    errors = []

    def run():
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= count:
                break
            try:
                err = work(conn, i)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
                err = f"t{i}: {e!r}"
            if err:
                with lock:
                    errors.append(err)
        conn.close()

    ts = [threading.Thread(target=run) for _ in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.monotonic() - t0, errors


def push(url, repo, count, threads):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
    push_blob(conn, repo, LAYER)
    push_blob(conn, repo, CONFIG)
    conn.close()

    def put(c, i):
        r, data = request(c, "PUT", f"/v2/{repo}/manifests/t{i}", body=manifest(f"t{i}"),
                          headers={"Content-Type": MT_MANIFEST})
        return None if r.status < 300 else f"PUT t{i} -> {r.status} {data[:200]!r}"

    secs, errors = on_threads(url, count, threads, put)
    if errors:
        sys.exit(f"tags.py: {len(errors)} PUTs failed, e.g. {errors[0]}")
    print(f"{secs:.3f}")


def get(url, repo, count, threads):
    def one(c, i):
        r, data = request(c, "GET", f"/v2/{repo}/manifests/t{i}", headers={"Accept": MT_MANIFEST})
        if r.status != 200 or data != manifest(f"t{i}"):
            return f"GET t{i} -> {r.status} {data[:200]!r}"
        return None

    secs, errors = on_threads(url, count, threads, one)
    print(f"{secs:.3f} {count - len(errors)}")
    if errors:
        sys.exit(f"tags.py: {len(errors)} GETs failed, e.g. {errors[0]}")


def main():
    a = sys.argv[1:]
    if a[:1] in (["push"], ["get"]) and len(a) in (4, 5):
        (push if a[0] == "push" else get)(a[1], a[2], int(a[3]), int(a[4]) if len(a) == 5 else 8)
    elif a[:1] == ["digest"] and len(a) == 3:
        print(sha(manifest(a[2])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
