#!/usr/bin/env python3
"""cgparse.py FILE [REGEX]: a callgrind.out file's per-function exclusive Ir, inclusive Ir
(summed call costs) and call counts (sum of calls= lines), optionally only functions whose name
matches REGEX. Functions inlined into others have no entry of their own."""
import sys, re, collections
path = sys.argv[1]
pat = re.compile(sys.argv[2]) if len(sys.argv) > 2 else None
names = {}
excl = collections.Counter(); calls = collections.Counter(); incl_calls = collections.Counter()
cur = None; cfn = None; pending = None; total = 0
def name(spec):
    m = re.match(r'\((\d+)\)(?: (.*))?$', spec)
    if not m: return spec
    i, n = m.groups()
    if n is not None: names[i] = n
    return names[i]
for line in open(path):
    line = line.rstrip('\n')
    if not line: continue
    c = line[0]
    if line.startswith('fn='):
        cur = name(line[3:]); continue
    if line.startswith('cfn='):
        cfn = name(line[4:]); continue
    if line.startswith('calls='):
        n = int(line[6:].split()[0]); calls[cfn] += n; pending = cfn; continue
    if c.isdigit() or c in '+-*':
        parts = line.split()
        ir = int(parts[1]) if len(parts) > 1 else 0
        if pending is not None:
            incl_calls[pending] += ir; pending = None
        else:
            excl[cur] += ir; total += ir
        continue
    if line.startswith('summary:') or line.startswith('totals:'):
        pass
print(f"total exclusive Ir {total:,}")
rows = set(excl) | set(calls)
rows = [r for r in rows if pat is None or pat.search(r)]
for r in sorted(rows, key=lambda r: -excl[r]):
    print(f"{excl[r]:>15,} excl  {incl_calls[r]:>15,} incl(called)  {calls[r]:>10,} calls  {r[:160]}")
