#!/usr/bin/env python3
"""Self cost per function from a callgrind profile, highest first.

callgrind_annotate 3.19 prints inclusive costs here even with --inclusive=no (every thread's
entry point at 100 %), which hides where the instructions are spent. This reads the format
directly: a cost line adds to the function named by the last `fn=`, except the line right after
a `calls=` line, which is the callee's inclusive cost.

    benches/callgrind-self.py PROFILE [TOP]
"""
import re
import sys
from collections import defaultdict

path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30
names, self_cost, fn, skip, total = {}, defaultdict(int), "?", False, 0
name_re = re.compile(r"\((\d+)\)(?: (.*))?")
with open(path, errors="replace") as f:
    for line in f:
        if line.startswith("fn="):
            m = name_re.match(line[3:].strip())
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                fn = names.get(m.group(1), "?")
            else:
                fn = line[3:].strip()
        elif line.startswith("cfn="):
            # A callee's name may be defined here first and only referred to by number later.
            m = name_re.match(line[4:].strip())
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
        elif line.startswith("calls="):
            skip = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if len(parts) >= 2:
                if skip:
                    skip = False
                else:
                    cost = int(parts[1])
                    self_cost[fn] += cost
                    total += cost
for name, cost in sorted(self_cost.items(), key=lambda kv: -kv[1])[:top]:
    print(f"{cost:>14,} {100 * cost / max(total, 1):5.1f} %  {name[:120]}")
