#!/usr/bin/env python3
"""report.py -- turn the key/value file that run.sh writes into the Markdown results.

Usage: report.py RESULTS.kv     (prints Markdown on stdout)
Each target of issues 7 and 18 is a ratio (or a bound) measured in the same run; the table says
MET or MISSED. Cases a .kv file lacks (older runs) are left out.
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
say(f"## Blob GET with curl, {big / MIB:.0f} MiB layer (medians, min–max: the cold cases timed in turns, round by round; the warm ones by hyperfine)\n")
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
r = f("cold_outpost") / f("cold_peer")
target(f"cold {BIG} GET ≤ 0.9 × the peer's time (issue 18)", f"{r:.2f}× ({f('cold_outpost'):.3f} s vs {f('cold_peer'):.3f} s)", r <= 0.9)
if have("cold_hashed"):
    r = f("cold_hashed") / f("cold_outpost")
    target(f"cold {BIG} GET ≥ 0.8 × receive + hash throughput (issue 18)",
           f"{r:.2f}× ({f('cold_outpost'):.3f} s vs {f('cold_hashed'):.3f} s)", r >= 0.8)
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

# ---- manifest by tag with many tags stored (issue 18)
def rounds(name):
    """The load runs NAME_1, NAME_2, ... (or NAME alone) as lists of fields."""
    out_ = [kv[f"{name}_{i}"] for i in range(1, 100) if have(f"{name}_{i}")]
    return out_ or ([kv[name]] if have(name) else [])


if rounds("load_outpost_tags_one_GET"):
    ntags = int(kv["startup_tags"][0])
    nr = len(rounds("load_outpost_tags_one_GET"))
    say(f"## Manifest by tag with {ntags} tags stored (issue 18), GET with `wrk -t2`\n")
    say(f"An outpost on the data dir of the start-up case below ({int(kv['startup_blobs'][0])} blobs, {ntags} tags "
        f"stored through outpost, `cache.tagTtl: 1h` so that every answer is a hit), and, up at the same time on "
        f"another port, the control: the same manifest and settings, a data dir holding that one tag only. "
        f"{nr} round(s), each with both processes started afresh (a whole process can be slower than the next start "
        f"of the same binary: 26.4 µs of CPU per request against 15.4-18.8 in the other starts once in twelve, "
        f"BENCHMARKS.md 2026-12-04; each round is a new draw) and warmed up (3 s of random tags "
        f"read the manifests from their files), then loaded in "
        f"turn, every other round in the reverse order: plain wrk on t0, and wrk with "
        f"`bench/tags.lua` (a random tag among the {ntags} per request; on the control among 1, since wrk's Lua "
        f"request generation costs CPU on the same cores). Req/s: median of the rounds (each round's figure). "
        f"For reference, the 1-tag figure of the "
        f"cached-manifest section (bench/small:1, earlier in the run) is {f('load_outpost_tag_GET'):.0f} req/s.\n")
    say("| tags stored | requests | req/s | p50 ms | p99 ms | non-2xx |")
    say("|---|---|---|---|---|---|")
    med_l = {}
    for k, stored, which in (("load_outpost_tags_base_GET", "1 (control)", "t0"),
                             ("load_outpost_tags_one_GET", str(ntags), "t0"),
                             ("load_outpost_tags_base_lua_GET", "1 (control)", "t0, by `bench/tags.lua` (among 1)"),
                             ("load_outpost_tags_random_GET", str(ntags), f"a random one of t0..t{ntags - 1} (`bench/tags.lua`)")):
        rs = rounds(k)
        if not rs:
            continue
        rps_l = [float(v[0]) for v in rs]
        med_l[k] = statistics.median(rps_l)
        bad = sum(int(v[3]) for v in rs)
        if bad:
            errors.append(f"manifest by tag ({k}): {bad} answers were not 2xx")
        say(f"| {stored} | {which} | {med_l[k]:.0f} ({', '.join(f'{x:.0f}' for x in rps_l)}) | "
            f"{statistics.median(float(v[1]) for v in rs):.3f} | {statistics.median(float(v[2]) for v in rs):.3f} | {bad} |")
    say("")
    ups_t = kv["tags_load_upstream"][0] if have("tags_load_upstream") else "?"
    say(f"Upstream requests during all these runs: {ups_t}.\n")
    one = f("load_outpost_tag_GET")
    for k, which, base in (("load_outpost_tags_one_GET", "one tag", "load_outpost_tags_base_GET"),
                           ("load_outpost_tags_random_GET", "random tags", "load_outpost_tags_base_lua_GET")):
        small = f"{med_l[k] / one:.2f}× bench/small:1 ({one:.0f} req/s)"
        if base in med_l:
            r = med_l[k] / med_l[base]
            measured = f"{med_l[k]:.0f} vs {med_l[base]:.0f} req/s (1-tag control{', Lua' if 'lua' in base else ''}) = {r:.2f}×; {small}"
        else:
            r = med_l[k] / one
            measured = f"{med_l[k]:.0f} req/s = {small}"
        target(f"manifest by tag, {ntags} tags stored, {which}: ≥ 0.9 × the 1-tag req/s",
               f"{measured}; upstream requests: {ups_t}", r >= 0.9 and ups_t in ("0", "?"))

# ---- concurrent ranges of one cold blob (issue 18)
if have("ranges"):
    n = int(kv["ranges"][0])
    say(f"## {n} concurrent Range GETs of one cold {BIG} blob (issue 18: containerd's per-layer parallel download)\n")
    say(f"`bench/rangeget.py`: {n} connections, one `Range: bytes=A-B` each (equal parts of the blob), sent "
        f"at once; bodies assembled and the whole hashed. Outpost and the peer are stopped, wiped and "
        f"restarted before each run. Times in seconds from the requests; \"first\" = a range's first body "
        f"byte, \"end\" = its last.\n")
    say("| server | run | wall | throughput | first byte, per range | end, per range | 200 (whole blob) instead of 206 |")
    say("|---|---|---|---|---|---|---|")
    walls_r = {}
    for who in ("direct", "outpost", "peer"):
        i = 1
        while have(f"ranges_{who}_{i}"):
            v = kv[f"ranges_{who}_{i}"]
            wall, ok, full = float(v[0]), v[1], int(v[2])
            per = [float(x) for x in v[3:3 + 2 * n]]
            firsts, ends = per[0::2], per[1::2]
            if ok != "1":
                errors.append(f"{n} ranges via {who}, run #{i}: the assembled blob has the wrong digest")
            walls_r.setdefault(who, []).append(wall)
            say(f"| {who} | #{i} | {wall:.3f} s | {big / MIB / wall:.0f} MiB/s | "
                f"{' / '.join(f'{x:.2f}' for x in firsts)} | {' / '.join(f'{x:.2f}' for x in ends)} | "
                f"{full} of {n} |")
            i += 1
    say("")
    med = {w: statistics.median(v) for w, v in walls_r.items()}
    ups_r = {}
    for who in ("outpost", "peer"):
        if have(f"ranges_{who}_upstream"):
            g, b = int(kv[f"ranges_{who}_upstream"][0]), float(kv[f"ranges_{who}_upstream"][1])
            runs_w = len(walls_r.get(who, []))
            ups_r[who] = (g, b, runs_w)
            say(f"- upstream during the {runs_w} runs via {who}: {g} blob GETs ({g / runs_w:.1f} per run), "
                f"{int(b)} B ({b / big / runs_w:.2f}× the blob per run)")
    say("")
    if all(w in med for w in ("direct", "outpost", "peer")) and len(ups_r) == 2:
        say(f"Medians: direct {med['direct']:.3f} s, outpost {med['outpost']:.3f} s, peer {med['peer']:.3f} s; "
            f"outpost ÷ peer = {med['outpost'] / med['peer']:.2f} (the peer takes {med['peer'] / med['outpost']:.2f}× "
            f"outpost's time); outpost = {med['direct'] / med['outpost']:.2f}× direct throughput. "
            f"One plain cold GET via outpost (curl, first section): {f('cold_outpost'):.3f} s.\n")
        (og, ob, orun), (pg, pb, prun) = ups_r["outpost"], ups_r["peer"]
        target(f"{n} ranges of a cold blob: upstream sends it once (1 GET)",
               f"outpost: {og} GETs, {ob / big:.2f}× the blob in {orun} runs (peer: {pg} GETs, {pb / big:.2f}× in {prun}); "
               f"wall {med['outpost']:.2f} s vs peer {med['peer']:.2f} s, direct {med['direct']:.2f} s",
               og == orun and abs(ob - orun * big) < 1)

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
ntags = int(kv["startup_tags"][0]) if have("startup_tags") else 0
nblobs = f"{int(kv['startup_blobs'][0])} " if have("startup_blobs") else ""
say(f"## Start-up with {nblobs}cached blobs{f' and {ntags} tags' if ntags else ''}: spawn → first blob GET answered 200 with the right bytes\n")
if have("startup_make_data"):
    say(f"- writing the {nblobs}bare blob files (`bench/startup.py make-data`): {f('startup_make_data'):.1f} s")
say(f"- first start (bare files, re-indexed by the startup reconcile): {f('startup_first'):.3f} s, VmHWM {f('startup_first', 1) / 1024:.1f} MiB")
if have("tags_push"):
    n, secs = int(kv["tags_push"][0]), f("tags_push", 1)
    say(f"- {n} manifests by tag (t0…, one tiny image, each manifest distinct) PUT to the upstream on 8 "
        f"connections (`bench/tags.py push`): {secs:.1f} s, {n / secs:.0f}/s")
    fs, ok, ups = f("tags_fill"), kv["tags_fill"][1], kv["tags_fill"][2]
    say(f"- each tag GET once through outpost on 8 connections (every one a miss: outpost fetches and stores "
        f"the manifest and the tag record): {fs:.1f} s, {n / fs:.0f}/s, {ok} of {n} right; upstream requests: {ups}")
    if int(ok) != n:
        errors.append(f"storing the tags: {ok} of {n} manifests came back right")
say(f"- later starts (index and files agree{', the tags stored' if ntags else ''}), {len(starts)} runs: median {statistics.median(starts):.3f} s, "
    f"min–max {min(starts):.3f}–{max(starts):.3f} s")
colds = [f(k) for k in kv if k.startswith("startup_cold_")]
if colds:
    say(f"- the same starts with the page cache dropped first (`startup.py --cold`, as after a reboot), {len(colds)} runs: "
        f"median {statistics.median(colds):.3f} s, min–max {min(colds):.3f}–{max(colds):.3f} s")
if have("startup_idle"):
    t, hwm, rss, idle = f("startup_idle"), f("startup_idle", 1), f("startup_idle", 2), f("startup_idle", 3)
    say(f"- one more start ({t:.3f} s), then {idle:.0f} s without a request: VmRSS {rss / 1024:.1f} MiB, VmHWM {hwm / 1024:.1f} MiB")
if after := rounds("rss_after_tags_load_outpost"):
    say(f"- after the many-tags manifest load runs (the process of each round, started on that data dir): "
        f"VmHWM {', '.join(f'{float(v[0]) / 1024:.1f}' for v in after)} MiB, "
        f"VmRSS {', '.join(f'{float(v[1]) / 1024:.1f}' for v in after)} MiB")
say("")
worst = max(starts + [f("startup_first")])
target("start-up with the cached blobs < 1 s to the first served request", f"median {statistics.median(starts):.3f} s, worst {worst:.3f} s (first start included)", worst < 1.0)
if ntags:
    target(f"start-up with {nblobs}blobs and {ntags} tags stored < 1 s", f"median {statistics.median(starts):.3f} s, worst {max(starts):.3f} s (later starts)", max(starts) < 1.0)
if have("startup_idle"):
    target(f"idle RSS with {nblobs}blobs and {ntags} tags stored ≤ 32 MiB", f"VmRSS {f('startup_idle', 2) / 1024:.1f} MiB after {f('startup_idle', 3):.0f} s idle (VmHWM {f('startup_idle', 1) / 1024:.1f} MiB)", f("startup_idle", 2) <= 32 * 1024)

print(f"## Targets ({'issues 7 and 18' if have('ranges') else 'issue 7'}), each from this run\n")
print("| target | measured | verdict |")
print("|---|---|---|")
for case, measured, verdict in verdicts:
    print(f"| {case} | {measured} | {verdict} |")
print()
print("\n".join(out))
if errors:
    print("bench: ERROR: this run served wrong bodies:\n  " + "\n  ".join(errors), file=sys.stderr)
    sys.exit(1)
