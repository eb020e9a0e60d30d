#!/usr/bin/env python3
"""hfstats.py GLOB [A_REGEX B_REGEX]: per command, the wall-time median/mean/sd/min/max and the
median user+sys CPU over hyperfine JSON files (one per round); with two regexes, also the
per-round B/A ratios (A and B ran in the same round, next to each other)."""
import json, glob, statistics, collections, sys, re
files = sorted(glob.glob(sys.argv[1]))
t = collections.defaultdict(list); cpu = collections.defaultdict(list)
for f in files:
    for r in json.load(open(f))['results']:
        t[r['command']] += r['times']; cpu[r['command']].append(r['user'] + r['system'])
print(f"{'n':>3} {'median s':>9} {'mean s':>8} {'sd':>6} {'min s':>7} {'max s':>7} {'cpu med':>8}  command")
for c, x in t.items():
    print(f"{len(x):>3} {statistics.median(x):>9.3f} {statistics.mean(x):>8.3f} {statistics.stdev(x):>6.3f} "
          f"{min(x):>7.3f} {max(x):>7.3f} {statistics.median(cpu[c]):>8.3f}  {c}")
if len(sys.argv) == 4:
    a, b = sys.argv[2:4]; rs = []; cs = []
    for f in files:
        res = json.load(open(f))['results']
        ra = [r for r in res if re.search(a, r['command'])]; rb = [r for r in res if re.search(b, r['command'])]
        if len(ra) == 1 and len(rb) == 1:
            rs.append(rb[0]['mean'] / ra[0]['mean'])
            cs.append((rb[0]['user'] + rb[0]['system']) / (ra[0]['user'] + ra[0]['system']))
    q = statistics.quantiles(rs, n=4)
    print(f"{len(rs)} rounds, B/A: wall median {statistics.median(rs):.3f} (IQR {q[0]:.3f}-{q[2]:.3f}), "
          f"CPU median {statistics.median(cs):.3f}")
