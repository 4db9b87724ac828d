#!/usr/bin/env python3
"""Two builds' bench_pool side by side in one run (a change against the commit before it).

Usage: python3 bench/ab_pool.py BASE_BENCH NEW_BENCH [REPS [GROUP[:FLAG] ...]]

For each repetition, every pool group (rtt pinned to CPU 0 and free, tput,
payload, ready, memory; or the GROUPs given, e.g. `sweep:--quick` of two
bench_sweep binaries) runs base then new, or new then base (alternating),
so drift of the machine spreads evenly. Prints a Markdown table: median and
spread ((max-min)/median) per metric and contender, and new/base."""
import json, statistics, subprocess, sys, collections
if len(sys.argv) < 3:
    sys.exit(__doc__)
BIN = {"base": sys.argv[1], "new": sys.argv[2]}
REPS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
RUNS = [("rtt", ["--cpu0"]), ("rtt", []), ("tput", []), ("payload", []), ("ready", []), ("memory", [])]
if len(sys.argv) > 4:
    RUNS = [(g.split(":")[0], g.split(":")[1:]) for g in sys.argv[4:]]
res = collections.defaultdict(list)
for r in range(REPS):
    order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
    for group, extra in RUNS:
        for who in order:
            out = subprocess.run([BIN[who], group, *extra], capture_output=True, text=True, timeout=600).stdout
            for line in out.splitlines():
                try:
                    o = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(o.get("value"), (int, float)):
                    continue
                key = (group + "".join("/" + e.lstrip("-") for e in extra), o["metric"], o.get("contender", ""), o.get("unit", ""), o.get("better", ""))
                res[(key, who)].append(o["value"])
    print(f"rep {r + 1} done", file=sys.stderr, flush=True)
keys = sorted({k for k, _ in res})
print("| group | metric | unit | better | base median (spread) | new median (spread) | new/base |")
print("|---|---|---|---|---|---|---|")
for k in keys:
    a, b = res.get((k, "base"), []), res.get((k, "new"), [])
    if not a or not b:
        continue
    ma, mb = statistics.median(a), statistics.median(b)
    sa = (max(a) - min(a)) / ma * 100 if ma else 0
    sb = (max(b) - min(b)) / mb * 100 if mb else 0
    print(f"| {k[0]} | {k[1]} ({k[2]}) | {k[3]} | {k[4]} | {ma:.4g} ({sa:.0f}%) | {mb:.4g} ({sb:.0f}%) | {mb / ma if ma else 0:.2f} |")
