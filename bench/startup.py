#!/usr/bin/env python3
"""startup.py -- time from starting outpost to its first served request on a big data dir.

Usage: startup.py make-data DATA_DIR COUNT
         writes COUNT small blob files (content "outpost bench blob <i>") where the storage crate
         keeps blobs (DATA_DIR/blobs/sha256/<2 hex>/<64 hex>); outpost indexes bare files at its
         next start (the startup reconcile), after which data dir and index agree.
       startup.py time OUTPOST_BIN CONFIG PORT DATA_DIR [COUNT] [--idle SECS]
         starts `OUTPOST_BIN serve --config CONFIG --data-dir DATA_DIR`, polls
         GET /v2/bench/startup/blobs/<digest of blob COUNT-1> every 2 ms until it answers 200
         with the right bytes, prints the seconds from spawn to that answer and the process's
         VmHWM in KiB ("SECONDS VMHWM_KB"), then stops the process (TERM, its pid only).
         With --idle SECS: after that answer, leaves the process alone for SECS seconds, then
         prints "SECONDS VMHWM_KB VMRSS_KB" (VmRSS: the resident set after the idle time).
         With --cold (root): syncs and drops the page cache first, as after a reboot.
"""
import hashlib, http.client, os, subprocess, sys, time


def content(i):
    return f"outpost bench blob {i}".encode()


def digest_hex(i):
    return hashlib.sha256(content(i)).hexdigest()


def make_data(data_dir, count):
    for i in range(count):
        h = digest_hex(i)
        d = os.path.join(data_dir, "blobs", "sha256", h[:2])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, h), "wb") as f:
            f.write(content(i))


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def drop_page_cache():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except PermissionError:
        sys.exit("startup.py: --cold drops the page cache, which needs root (run it as root)")


def time_start(binary, config, port, data_dir, count, idle=None, cold=False):
    want = count - 1
    path = f"/v2/bench/startup/blobs/sha256:{digest_hex(want)}"
    log = open(os.path.join(os.path.dirname(data_dir.rstrip("/")), "startup-outpost.log"), "ab")
    if cold:
        drop_page_cache()
    t0 = time.monotonic()
    proc = subprocess.Popen([binary, "serve", "--config", config, "--data-dir", data_dir],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                sys.exit(f"startup.py: outpost exited with {proc.returncode}; see its log")
            if time.monotonic() - t0 > 60:
                sys.exit("startup.py: outpost served nothing within 60 s")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", path)
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200 and body == content(want):
                    break
                sys.exit(f"startup.py: GET {path} -> {r.status} {body[:200]!r}")
            except (ConnectionRefusedError, ConnectionResetError):
                time.sleep(0.002)
        elapsed = time.monotonic() - t0
        if idle is None:
            print(f"{elapsed:.4f} {status_kb(proc.pid, 'VmHWM')}")
        else:
            time.sleep(idle)
            if proc.poll() is not None:
                sys.exit(f"startup.py: outpost exited with {proc.returncode} while idle; see its log")
            print(f"{elapsed:.4f} {status_kb(proc.pid, 'VmHWM')} {status_kb(proc.pid, 'VmRSS')}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    a = sys.argv[1:]
    idle = None
    cold = "--cold" in a
    if cold:
        a.remove("--cold")
    if "--idle" in a:
        i = a.index("--idle")
        idle = float(a[i + 1])
        del a[i:i + 2]
    if a[:1] == ["make-data"] and len(a) == 3:
        make_data(a[1], int(a[2]))
    elif a[:1] == ["time"] and len(a) in (5, 6):
        time_start(a[1], a[2], int(a[3]), a[4], int(a[5]) if len(a) == 6 else 10000, idle, cold)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
