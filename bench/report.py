#!/usr/bin/env python3
"""report.py -- turn the key/value file that run.sh writes into the Markdown results.

Usage: report.py RESULTS.kv     (prints Markdown on stdout)
Each target of issue 7 is a ratio measured in the same run; the table says MET or MISSED.
"""
import statistics, sys

kv = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if parts:
        kv[parts[0]] = parts[1:]


def f(key, i=0):
    return float(kv[key][i])


def have(key):
    return key in kv


MIB = 1 << 20
out = []
say = out.append
verdicts = []
# Wrong bodies are not a missed target but a broken run: listed at the end, exit status 1.
errors = []


def target(case, measured, ok):
    verdicts.append((case, measured, "MET" if ok else "**MISSED**"))


def hf_row(label, key, size=None):
    med, lo, hi = f(key, 0), f(key, 1), f(key, 2)
    thr = f" {size / MIB / med:.0f} MiB/s |" if size else ""
    return f"| {label} | {med:.3f} s | {lo:.3f}–{hi:.3f} s |{thr}"


big, mid = f("big_size"), f("mid_size")
BIG = f"{big / MIB:.0f} MiB" if big < 1 << 30 else f"{big / (1 << 30):.0f} GiB"
runs = len([k for k in kv if k.startswith("fanout_outpost_")])

# ---- warm / cold GET
say(f"## Blob GET with curl, {big / MIB:.0f} MiB layer (hyperfine medians, min–max)\n")
say("| case | median | min–max | throughput |")
say("|---|---|---|---|")
say(hf_row("warm: outpost (cached)", "warm_outpost", big))
say(hf_row("warm: peer (cached)", "warm_peer", big))
say(hf_row("nginx, same file (hard link), sendfile", "warm_nginx", big))
say(hf_row("`cat` of the file (page cache)", "cat_file", big))
say(hf_row("cold: straight from the upstream", "cold_direct", big))
if have("cold_hashed"):
    say(hf_row("cold: straight from the upstream, hashed as received (`bench/hashget.py`, no proxy)", "cold_hashed", big))
if have("hash_file"):
    say(hf_row("SHA-256 of the file in the page cache alone (`openssl dgst`, no network)", "hash_file", big))
say(hf_row("cold: outpost (stopped, data dir wiped, restarted before each run)", "cold_outpost", big))
say(hf_row("cold: peer (stopped, cache wiped, restarted before each run)", "cold_peer", big))
say("")
og, ob = kv["cold_outpost_one_get"]
pg, pb = kv["cold_peer_one_get"]
say(f"Upstream traffic for ONE cold GET (counted from its access log after it went quiet): "
    f"outpost {og} GET(s), {int(float(ob))} B = {float(ob) / big:.2f}× the blob; "
    f"peer {pg} GET(s), {int(float(pb))} B = {float(pb) / big:.2f}×. "
    f"Body digest verified: outpost cold {'yes' if kv['cold_outpost_digest_ok'][0] == '1' else 'NO'}, "
    f"outpost warm {'yes' if kv['warm_outpost_digest_ok'][0] == '1' else 'NO'}, "
    f"peer cold {'yes' if kv['cold_peer_digest_ok'][0] == '1' else 'NO'}. "
    f"Upstream requests during the warm outpost runs: {kv['warm_outpost_upstream_reqs'][0]}. "
    f"Upstream blob GETs during the {runs} timed cold outpost runs: {kv['cold_outpost_upstream_per_run'][0]} "
    f"({int(float(kv['cold_outpost_upstream_per_run'][1]))} B).\n")
for key, what in (("cold_outpost_digest_ok", "outpost, cold"), ("warm_outpost_digest_ok", "outpost, warm"),
                  ("cold_peer_digest_ok", "the peer, cold")):
    if kv[key][0] != "1":
        errors.append(f"{what}: the {BIG} blob's body has the wrong digest")
r = f("warm_nginx") / f("warm_outpost")
target(f"warm {BIG} GET ≥ 0.95 × nginx throughput", f"{r:.2f}× nginx (peer: {f('warm_nginx') / f('warm_peer'):.2f}×)", r >= 0.95)
r = f("cold_direct") / f("cold_outpost")
once = og == "1" and abs(float(ob) - big) < 1
hashed = f"; receive + hash, no proxy: {f('cold_direct') / f('cold_hashed'):.2f}×" if have("cold_hashed") else ""
if have("hash_file"):
    hashed += f"; SHA-256 alone: {f('cold_direct') / f('hash_file'):.2f}×"
target(f"cold {BIG} GET ≥ 0.9 × direct throughput", f"{r:.2f}× direct (peer: {f('cold_direct') / f('cold_peer'):.2f}×{hashed})", r >= 0.9)
target("cold GET: upstream sends the blob exactly once", f"outpost {float(ob) / big:.2f}× in {og} GET(s) (peer {float(pb) / big:.2f}× in {pg})", once)

# ---- fan-out
say(f"## Concurrent clients on one uncached {mid / MIB:.0f} MiB blob (fresh server, empty cache, each run)\n")
say("| run | wall time | bodies with the right digest | upstream GETs | upstream bytes (× blob) | VmHWM at the end |")
say("|---|---|---|---|---|---|")
walls, hwms, all_once = [], [], True
# the number of clients (older .kv files lack it: then the most bodies any run verified)
want = int(kv["clients"][0]) if have("clients") else max(int(v[1]) for k, v in kv.items() if k.startswith("fanout_"))
nginx_walls = []
for who in ("outpost", "peer", "nginx"):
    i = 1
    while have(f"fanout_{who}_{i}"):
        wall, ok, gets, byts, hwm = kv[f"fanout_{who}_{i}"]
        if int(ok) != want:
            errors.append(f"{who}, concurrent run #{i}: {ok} of {want} bodies had the right digest")
        if who == "nginx":
            nginx_walls.append(float(wall))
            say(f"| nginx (the file, no upstream) #{i} | {float(wall):.2f} s | {ok} | – | – | {int(hwm) / 1024:.1f} MiB |")
            i += 1
            continue
        say(f"| {who} #{i} | {float(wall):.2f} s | {ok} | {gets} | {int(float(byts))} ({float(byts) / mid:.2f}×) | {int(hwm) / 1024:.1f} MiB |")
        if who == "outpost":
            walls.append(float(wall))
            hwms.append(int(hwm))
            all_once &= gets == "1" and abs(float(byts) - mid) < 1
        i += 1
say("")
say(f"One cold client via outpost, same blob ({runs} runs): median {f('one_cold_outpost'):.3f} s, "
    f"min–max {f('one_cold_outpost', 1):.3f}–{f('one_cold_outpost', 2):.3f} s.\n")
med_wall = statistics.median(walls)
r = med_wall / f("one_cold_outpost")
if nginx_walls:
    nw = statistics.median(nginx_walls)
    say(f"The same clients on nginx serving the file: median {nw:.2f} s, i.e. moving and hashing "
        f"{want} copies on this machine takes {nw / f('one_cold_outpost'):.2f}× one cold outpost client "
        f"even without any proxy work; outpost's median is {med_wall / nw:.2f}× nginx's.\n")
bodies_ok = all(int(kv[k][1]) == want for k in kv if k.startswith("fanout_outpost_"))
target(f"concurrent clients: upstream sends the blob once, all {want} bodies verified",
       ("every run: 1 GET, 1.00×" if all_once else "upstream: see table")
       + (f"; {want}/{want} bodies" if bodies_ok else "; wrong bodies: see table"),
       all_once and bodies_ok)
target("concurrent clients: wall ≤ 1.5 × one cold client", f"median {med_wall:.2f} s = {r:.2f}× one cold client ({f('one_cold_outpost'):.2f} s)"
       + (f"; nginx, same clients: {statistics.median(nginx_walls):.2f} s" if nginx_walls else ""), r <= 1.5)

# ---- manifests
say("## Cached manifest (bench/small), GET with `wrk -t2`, HEAD with `ab -i -k`\n")
say("| server | reference | method | req/s | p50 ms | p99 ms | non-2xx | upstream requests during the run |")
say("|---|---|---|---|---|---|---|---|")
for who in ("outpost", "peer", "upstream"):
    for ref in ("tag", "digest"):
        for m in ("GET", "HEAD"):
            k = f"load_{who}_{ref}_{m}"
            if have(k):
                rps, p50, p99, bad, ups = kv[k]
                say(f"| {who} | {ref} | {m} | {float(rps):.0f} | {p50} | {p99} | {bad} | {ups} |")
say("")
for ref, want in (("tag", 10), ("digest", 2)):
    for m in ("GET", "HEAD"):
        o, p = f(f"load_outpost_{ref}_{m}"), f(f"load_peer_{ref}_{m}")
        target(f"manifest by {ref}, {m}: ≥ {want} × the peer's req/s", f"{o:.0f} vs {p:.0f} req/s = {o / p:.1f}×", o >= want * p)
ups = sum(int(kv[f"load_outpost_{r}_{m}"][4]) for r in ("tag", "digest") for m in ("GET", "HEAD"))
target("manifest load: zero upstream requests", f"{ups} upstream requests during outpost's runs", ups == 0)

# ---- end-to-end
say("## End-to-end pulls of bench/big:1 (one layer of the size above)\n")
say("| case | median | min–max |")
say("|---|---|---|")
for tool, label in (("skopeo", "`skopeo copy` to `dir:`"), ("ctr", "`ctr content fetch` (containerd, hosts dir)")):
    if not have(f"{tool}_direct"):
        continue
    for k, l in (("direct", "straight from the upstream"), ("outpost_cold", "outpost, cold"), ("outpost_warm", "outpost, warm"),
                 ("peer_cold", "peer, cold"), ("peer_warm", "peer, warm")):
        say(hf_row(f"{label}: {l}", f"{tool}_{k}"))
    r = f(f"{tool}_outpost_cold") / f(f"{tool}_direct")
    target(f"{tool}: cold pull ≤ 1.1 × direct", f"{r:.2f}× direct (peer {f(f'{tool}_peer_cold') / f(f'{tool}_direct'):.2f}×; warm outpost {f(f'{tool}_outpost_warm') / f(f'{tool}_direct'):.2f}×)", r <= 1.1)
say("")
for k, l in (("skopeo_outpost_warm_upstream", "skopeo warm runs"), ("ctr_outpost_warm_upstream", "ctr warm runs"),
             ("skopeo_outpost_cold_upstream", "skopeo cold runs")):
    if have(k):
        say(f"- upstream GETs of the layer during outpost's {l}: {kv[k][0]} ({int(float(kv[k][1]))} B)")
say("")

# ---- memory
say("## Memory (VmHWM = peak resident set of the process)\n")
say("| when | outpost | peer |")
say("|---|---|---|")
say(f"| idle, 2 s after start | {f('rss_idle_outpost') / 1024:.1f} MiB | {f('rss_idle_peer') / 1024:.1f} MiB |")
peer_hwm = [int(kv[k][4]) for k in kv if k.startswith("fanout_peer_")]
say(f"| during the concurrent-clients case (max over runs) | {max(hwms) / 1024:.1f} MiB | {max(peer_hwm) / 1024 if peer_hwm else float('nan'):.1f} MiB |")
say(f"| after cold+warm 1 GiB GETs (cumulative since start) | {f('rss_after_warm_outpost') / 1024:.1f} MiB | – |")
say(f"| after the manifest load runs (cumulative since start) | {f('rss_after_load_outpost') / 1024:.1f} MiB | {f('rss_after_load_peer') / 1024:.1f} MiB |")
say("")
target("peak RSS during concurrent clients ≤ 20 MiB", f"{max(hwms) / 1024:.1f} MiB", max(hwms) <= 20 * 1024)
target("idle RSS after start ≤ 10 MiB", f"{f('rss_idle_outpost') / 1024:.1f} MiB", f("rss_idle_outpost") <= 10 * 1024)

# ---- start-up
starts = [f(k) for k in kv if k.startswith("startup_indexed_")]
say("## Start-up with cached blobs: spawn → first blob GET answered 200 with the right bytes\n")
say(f"- first start (bare files, re-indexed by the startup reconcile): {f('startup_first'):.3f} s, VmHWM {f('startup_first', 1) / 1024:.1f} MiB")
say(f"- later starts (index and files agree), {len(starts)} runs: median {statistics.median(starts):.3f} s, "
    f"min–max {min(starts):.3f}–{max(starts):.3f} s\n")
worst = max(starts + [f("startup_first")])
target("start-up with the cached blobs < 1 s to the first served request", f"median {statistics.median(starts):.3f} s, worst {worst:.3f} s (first start included)", worst < 1.0)

print("## Targets (issue 7), each a ratio from this run\n")
print("| target | measured | verdict |")
print("|---|---|---|")
for case, measured, verdict in verdicts:
    print(f"| {case} | {measured} | {verdict} |")
print()
print("\n".join(out))
if errors:
    print("bench: ERROR: this run served wrong bodies:\n  " + "\n  ".join(errors), file=sys.stderr)
    sys.exit(1)
