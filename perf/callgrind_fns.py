#!/usr/bin/env python3
"""Self and inclusive instruction counts per function name from a callgrind
output file, merged over the files a function's inlined code comes from
(callgrind_annotate splits those). Usage: callgrind_fns.py FILE [REGEX...]:
prints the functions whose name matches one of the regexes (all if none)."""
import re
import sys

from callgrind_names import Names

selfc = {}
incl = {}
name = Names().resolve


fn = None
pending_call = None
total = 0
for line in open(sys.argv[1], errors="replace"):
    line = line.rstrip("\n")
    if line.startswith("fn="):
        fn = name("fn", line[3:])
        continue
    if line.startswith("cfn="):
        pending_call = name("fn", line[4:])
        continue
    if line.startswith("calls="):
        continue
    if line.startswith("summary:") or line.startswith("totals:"):
        total = int(line.split()[1])
        continue
    if line and (line[0].isdigit() or line[0] in "+-*"):
        parts = line.split()
        if len(parts) < 2:
            continue
        cost = int(parts[1])
        if pending_call is not None:
            # Inclusive cost of a call made by `fn`.
            if pending_call != fn:
                incl[fn] = incl.get(fn, 0) + cost
            pending_call = None
        else:
            selfc[fn] = selfc.get(fn, 0) + cost
            incl[fn] = incl.get(fn, 0) + cost
        continue
    if "=" in line and line.split("=")[0] in ("cfi", "cfl", "cob", "ob", "fl", "fi", "fe"):
        continue

pats = [re.compile(p) for p in sys.argv[2:]]
print(f"{total:>14,}  total (collected)")
rows = [(incl[f], selfc.get(f, 0), f) for f in incl if not pats or any(p.search(f) for p in pats)]
for i, s, f in sorted(rows, reverse=True):
    print(f"{i:>14,} incl {s:>13,} self  {f[:150]}")
