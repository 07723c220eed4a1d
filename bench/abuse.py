#!/usr/bin/env python3
"""abuse.py -- hostile clients against a running outpost, and how a well-behaved client fares.

Usage: abuse.py --url http://127.0.0.1:PORT --pid PID --manifest PATH --blob PATH
                [--secs 30] [--only PROBE,...] [--conns 1100] [--burst 3000]

Each probe runs for --secs seconds while a well-behaved client GETs the cached manifest
(PATH, e.g. /v2/bench/small/manifests/1) over a new connection every 200 ms from 127.0.0.3,
with curl (--max-time 10). A sampler reads outpost's RSS and open file descriptors from
/proc/PID every 100 ms. Probes (attackers bind 127.0.0.2, except h2load and wrk, which cannot
bind a source address and run from 127.0.0.1):

  idle         --conns connections that send nothing; each reconnects when outpost closes it
  h2-preface   --conns connections that send the HTTP/2 preface and SETTINGS, then nothing
  partial-head --conns connections that send a never-ending request head, one byte every 5 s
  burst        --burst connections at once, each GETs the manifest; again every 5 s
  h2load       h2load -c 200 -m 100 on the cached blob (PATH of --blob) for --secs
  keepalive    wrk -c 1000: 1,000 keep-alive connections GETting the cached manifest

Prints one Markdown table row per probe (and the header first). Loopback only: the URL must
be on 127.0.0.0/8. Stdlib only; needs curl, h2load (nghttp2-client) and wrk.
"""
import argparse, asyncio, ipaddress, os, resource, socket, statistics, subprocess, sys
import threading, time, urllib.parse

ATTACKER = "127.0.0.2"
GOOD = "127.0.0.3"
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class Sampler(threading.Thread):
    """outpost's RSS (KiB) and open fds every 100 ms; the peaks since the last reset."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.lock, self.stopped = pid, threading.Lock(), False
        self.reset()

    def now(self):
        rss = 0
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return rss, len(os.listdir(f"/proc/{self.pid}/fd"))

    def reset(self):
        with self.lock:
            self.peak_rss, self.peak_fds = self.now()

    def run(self):
        while not self.stopped:
            rss, fds = self.now()
            with self.lock:
                self.peak_rss = max(self.peak_rss, rss)
                self.peak_fds = max(self.peak_fds, fds)
            time.sleep(0.1)


class GoodClient(threading.Thread):
    """curl from 127.0.0.3 every 200 ms: (HTTP status, seconds) of each request."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url, self.results, self.stopped = url, [], False

    def run(self):
        while not self.stopped:
            started = time.monotonic()
            out = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "--interface", GOOD, "--max-time", "10",
                 "-H", "Accept: " + MANIFEST_ACCEPT, "-w", "%{http_code} %{time_total}", self.url],
                capture_output=True, text=True)
            code, secs = (out.stdout.split() + ["0", "10"])[:2]
            self.results.append((int(code), float(secs) if code != "000" else time.monotonic() - started))
            time.sleep(max(0.0, 0.2 - (time.monotonic() - started)))


async def connect(host, port):
    """A connection from ATTACKER; the port is chosen at connect() so TIME_WAIT ones are reused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.setblocking(False)
    try:
        sock.bind((ATTACKER, 0))
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 5)
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def holder(kind, host, port, deadline, stats):
    """One attacker slot: keep a connection of `kind` open until the deadline, reconnecting."""
    slow_head = b"GET /v2/ HTTP/1.1\r\nHost: " + host.encode() + b"\r\nX-Slow: "
    while time.monotonic() < deadline:
        try:
            reader, writer = await connect(host, port)
        except (OSError, asyncio.TimeoutError):
            stats["refused"] += 1
            await asyncio.sleep(0.2)
            continue
        stats["opened"] += 1
        opened, sent, closed = time.monotonic(), 0, False
        try:
            if kind == "h2-preface":
                writer.write(H2_PREFACE)
            while time.monotonic() < deadline:
                if kind == "partial-head":
                    writer.write(slow_head[sent:sent + 1] if sent < len(slow_head) else b"a")
                    sent += 1
                wait = 5.0 if kind == "partial-head" else deadline - time.monotonic()
                try:
                    data = await asyncio.wait_for(reader.read(65536), max(0.01, wait))
                except asyncio.TimeoutError:
                    continue
                if not data:
                    closed = True
                    break
        except OSError:
            closed = True
        if closed:
            stats["closed_by_outpost"] += 1
            stats["lifetimes"].append(time.monotonic() - opened)
        writer.close()
        if closed:
            await asyncio.sleep(0.2)


async def one_get(host, port, path):
    try:
        reader, writer = await connect(host, port)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: {MANIFEST_ACCEPT}\r\n"
                     "Connection: close\r\n\r\n".encode())
        body = await asyncio.wait_for(reader.read(), 30)
        return body.startswith(b"HTTP/1.1 200")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


async def bursts(host, port, path, n, deadline, stats):
    while time.monotonic() < deadline:
        started = time.monotonic()
        done = await asyncio.gather(*(one_get(host, port, path) for _ in range(n)))
        stats["bursts"] += 1
        stats["served"] += sum(done)
        stats["not_served"] += len(done) - sum(done)
        await asyncio.sleep(max(0.0, 5 - (time.monotonic() - started)))


def run_tool(cmd, secs):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
    return out.stdout + out.stderr


def attack(probe, args, host, port):
    """Runs one probe for args.secs; returns a one-line summary of what the attacker got."""
    deadline = time.monotonic() + args.secs
    if probe in ("idle", "h2-preface", "partial-head"):
        stats = {"opened": 0, "refused": 0, "closed_by_outpost": 0, "lifetimes": []}

        async def main():
            await asyncio.gather(*(holder(probe, host, port, deadline, stats) for _ in range(args.conns)))

        asyncio.run(main())
        # closed within 1 s: turned away at accept (the per-address limit); later: a deadline
        turned_away = sum(1 for t in stats["lifetimes"] if t < 1)
        later = [t for t in stats["lifetimes"] if t >= 1]
        median = f", median after {statistics.median(later):.1f} s" if later else ""
        return (f"{args.conns} slots: {stats['opened']} connections, {stats['refused']} not accepted, "
                f"{turned_away} closed at once, {len(later)} closed later{median}")
    if probe == "burst":
        stats = {"bursts": 0, "served": 0, "not_served": 0}
        asyncio.run(bursts(host, port, args.manifest, args.burst, deadline, stats))
        return (f"{stats['bursts']} bursts of {args.burst}: {stats['served']} GETs served, "
                f"{stats['not_served']} refused or closed")
    if probe == "h2load":
        out = run_tool(["h2load", "-c", "200", "-m", "100", "-D", str(args.secs), args.url + args.blob],
                       args.secs)
        lines = [l.strip() for l in out.splitlines() if l.startswith(("requests:", "status codes:"))]
        return "h2load " + "; ".join(lines) if lines else "h2load said: " + out.strip()[-300:]
    if probe == "keepalive":
        out = run_tool(["wrk", "-t2", "-c1000", f"-d{args.secs}s", "--latency",
                        "-H", "Accept: " + MANIFEST_ACCEPT, args.url + args.manifest], args.secs)
        keep = [l.strip() for l in out.splitlines()
                if l.strip().startswith(("Requests/sec", "99%", "Non-2xx", "Socket errors"))]
        return "wrk -c1000: " + "; ".join(keep)
    if probe == "none":
        time.sleep(args.secs)
        return "no attacker"
    raise SystemExit(f"abuse.py: unknown probe {probe}")


def summary(results):
    times = sorted(t for _, t in results)
    if not times:
        return "0", "-", "-", "-", "-"
    bad = sum(1 for code, t in results if code != 200 or t > 1.0)
    pct = lambda p: times[min(len(times) - 1, int(p * len(times)))] * 1000
    return str(len(times)), str(bad), f"{pct(0.5):.1f}", f"{pct(0.99):.1f}", f"{times[-1] * 1000:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", required=True, type=int)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--blob", required=True)
    ap.add_argument("--secs", type=int, default=30)
    ap.add_argument("--conns", type=int, default=1100)
    ap.add_argument("--burst", type=int, default=3000)
    ap.add_argument("--only", default="none,idle,h2-preface,partial-head,burst,h2load,keepalive")
    args = ap.parse_args()
    url = urllib.parse.urlsplit(args.url)
    if not ipaddress.ip_address(url.hostname).is_loopback:
        raise SystemExit(f"abuse.py: {args.url} is not a loopback address; this script only targets 127.0.0.0/8")
    host, port = url.hostname, url.port
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.burst + 100:
        raise SystemExit(f"abuse.py: the open-files limit ({hard}) is below --burst {args.burst}; raise it (ulimit -Hn)")

    sampler = Sampler(args.pid)
    sampler.start()
    print("| probe | what the attacker got | good client: requests | over 1 s or failed | p50 ms | p99 ms"
          " | max ms | outpost peak RSS MiB | peak fds | RSS MiB / fds 5 s after |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst_rss = 0
    for probe in args.only.split(","):
        print(f"abuse: {probe} for {args.secs} s", file=sys.stderr)
        sampler.reset()
        good = GoodClient(args.url + args.manifest)
        good.start()
        got = attack(probe, args, host, port)
        good.stopped = True
        good.join()
        peak_rss, peak_fds = sampler.peak_rss, sampler.peak_fds
        worst_rss = max(worst_rss, peak_rss)
        time.sleep(5)
        rss_after, fds_after = sampler.now()
        n, bad, p50, p99, worst = summary(good.results)
        print(f"| {probe} | {got} | {n} | {bad} | {p50} | {p99} | {worst} | {peak_rss / 1024:.1f} | "
              f"{peak_fds} | {rss_after / 1024:.1f} / {fds_after} |", flush=True)
    sampler.stopped = True
    print(f"\nabuse: worst peak RSS {worst_rss / 1024:.1f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
