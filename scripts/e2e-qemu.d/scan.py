#!/usr/bin/env python3
"""Search files (whole disk images included) for planted byte strings.

usage: scan.py PATTERNS FILE...

PATTERNS has one pattern a line: NAME<TAB>HEX. For every pattern and file,
prints `found NAME FILE OFFSET` (first hit) or nothing. Exit 1 when anything
was found, 0 when nothing, 2 on a usage error. Never prints a pattern's bytes.
Sparse images are read through mmap, so holes cost little.
"""
import mmap
import os
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    patterns = []
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            name, hexval = line.split("\t", 1)
            patterns.append((name, bytes.fromhex(hexval)))
    found = False
    for path in sys.argv[2:]:
        if os.path.getsize(path) == 0:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for name, pat in patterns:
                at = m.find(pat)
                if at >= 0:
                    print(f"found {name} {path} {at}")
                    found = True
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
