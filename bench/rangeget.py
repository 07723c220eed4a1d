#!/usr/bin/env python3
"""rangeget.py -- fetch one blob as N concurrent byte ranges, the way containerd 2.x does with
`max_concurrent_downloads_per_layer`, assemble it and check its digest.

Usage: rangeget.py URL SIZE DIGEST [N]      (N: ranges, default 4)
  Splits bytes 0..SIZE-1 into N contiguous ranges of (nearly) equal length and, on N threads
  with one HTTP/1.1 connection each, sends `GET URL` with `Range: bytes=A-B` for each, all at
  the same moment (a barrier). Bodies are read with read1 (whatever has arrived, up to 1 MiB)
  into one buffer of SIZE bytes; the whole is then hashed (SHA-256, hashlib) and compared with
  DIGEST (after the clock has stopped: the wall time is that of the transfer).
  A server that ignores the Range and answers 200 with the whole blob is handled as a client
  that discards the bytes before A, keeps A..B and then closes the connection (containerd
  discards leading bytes the same way); such answers are counted.
Prints one line: "WALL DIGEST_OK FULL_200 FIRST_1 END_1 ... FIRST_N END_N" -- seconds from the
start of the requests to the last range's last byte; 1 when the assembled blob has DIGEST, else
0; how many ranges were answered 200 instead of 206; per range, seconds to its first body byte
and to its last. Exits 1 (after printing) on a wrong status or Content-Range, or a short body.
Stdlib only.
"""
import hashlib
import http.client
import re
import sys
import threading
import time
import urllib.parse


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    url = urllib.parse.urlsplit(sys.argv[1])
    size, digest = int(sys.argv[2]), sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) == 5 else 4
    if n < 1 or n > size:
        sys.exit("rangeget: N must be between 1 and SIZE")
    path = url.path + (f"?{url.query}" if url.query else "")
    bounds = [(i * size // n, (i + 1) * size // n - 1) for i in range(n)]
    buf = bytearray(size)
    mv = memoryview(buf)
    first = [None] * n
    end = [None] * n
    full = [0] * n
    errors = []
    conns = [http.client.HTTPConnection(url.hostname, url.port or 80, timeout=600) for _ in range(n)]
    for c in conns:  # connect before the clock starts: the case is the transfer, not TCP setup
        c.connect()
    barrier = threading.Barrier(n + 1)
    t0 = [0.0]

    def fetch(i):
        a, b = bounds[i]
        c = conns[i]
        try:
            barrier.wait()
            c.request("GET", path, headers={"Range": f"bytes={a}-{b}"})
            r = c.getresponse()
            if r.status == 206:
                cr = r.getheader("Content-Range", "")
                m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", cr.strip())
                if not m or (int(m[1]), int(m[2])) != (a, b):
                    raise ValueError(f"206 with Content-Range {cr!r}, asked for {a}-{b}")
                skip, pos = 0, a
            elif r.status == 200:
                full[i] = 1
                skip, pos = a, a
            else:
                raise ValueError(f"HTTP {r.status} {r.read(200)!r}")
            while pos <= b:
                chunk = r.read1(1 << 20)
                if not chunk:
                    raise ValueError(f"body ended at byte {pos}, range {a}-{b}")
                if first[i] is None:
                    first[i] = time.monotonic() - t0[0]
                if skip:  # a 200: drop the bytes before the range
                    drop = min(skip, len(chunk))
                    chunk = chunk[drop:]
                    skip -= drop
                    if not chunk:
                        continue
                take = min(len(chunk), b + 1 - pos)
                mv[pos:pos + take] = chunk[:take]
                pos += take
            end[i] = time.monotonic() - t0[0]
        except Exception as e:  # noqa: BLE001 -- reported, the run is then broken
            errors.append(f"range {i} ({a}-{b}): {e}")
        finally:
            c.close()

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    t0[0] = time.monotonic()
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0[0]
    ok = not errors and "sha256:" + hashlib.sha256(mv).hexdigest() == digest
    per = " ".join(f"{first[i] or 0:.4f} {end[i] or 0:.4f}" for i in range(n))
    print(f"{wall:.4f} {1 if ok else 0} {sum(full)} {per}")
    if errors:
        sys.exit("rangeget: " + "; ".join(errors))


if __name__ == "__main__":
    main()
