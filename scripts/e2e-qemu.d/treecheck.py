#!/usr/bin/env python3
"""Check that an ext4 partition keeps the special metadata of a tarball.

usage: treecheck.py TARBALL IMAGE?offset=BYTES

Every entry of TARBALL (not a symlink or hard link) whose mode has setuid,
setgid or sticky bits, or whose owner or group is not root, must have the
same permission bits, uid and gid in the filesystem (read with debugfs).
Prints `checked N` and one line per mismatch; exit 1 on any mismatch.
"""
import re
import subprocess
import sys
import tarfile
import tempfile


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    tarball, device = sys.argv[1:]
    want = {}
    with tarfile.open(tarball, "r:") as tf:
        for m in tf:
            if m.issym() or m.islnk():
                continue
            if m.mode & 0o7000 or m.uid != 0 or m.gid != 0:
                path = "/" + m.name.lstrip("./").rstrip("/")
                want[path] = (m.mode & 0o7777, m.uid, m.gid)
    if not want:
        print("checked 0")
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as cmds:
        for p in want:
            cmds.write(f'stat "{p}"\n')
        cmds.flush()
        out = subprocess.run(
            ["debugfs", "-f", cmds.name, device],
            capture_output=True, text=True, env={"LC_ALL": "C", "PAGER": "cat", "DEBUGFS_PAGER": "cat", "PATH": "/usr/sbin:/sbin:/usr/bin:/bin"},
        ).stdout
    got = {}
    current = None
    for line in out.splitlines():
        m = re.match(r'debugfs: stat "(.*)"$', line)
        if m:
            current = m.group(1)
            continue
        if current is None:
            continue
        m = re.search(r"Mode:\s+(\d+)", line)
        if m:
            got.setdefault(current, {})["mode"] = int(m.group(1), 8) & 0o7777
        m = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", line)
        if m:
            got.setdefault(current, {})["uid"] = int(m.group(1))
            got[current]["gid"] = int(m.group(2))
    bad = 0
    for p, (mode, uid, gid) in sorted(want.items()):
        g = got.get(p)
        if g is None or "mode" not in g or "uid" not in g:
            print(f"missing {p}")
            bad += 1
        elif (g["mode"], g["uid"], g["gid"]) != (mode, uid, gid):
            print(f"differs {p}: tar {mode:04o} {uid}:{gid}, ext4 {g['mode']:04o} {g['uid']}:{g['gid']}")
            bad += 1
    print(f"checked {len(want)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
