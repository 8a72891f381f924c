#!/usr/bin/env python3
"""Render a template's ${SECRET:NAME|keyfile} placeholders from E2E_<NAME>
environment variables, escaping as GLib's key-file writer does: an
implementation independent of the Rust one, for the host to compute the
SHA-256 the device's rendering must have. Prints the rendered text."""
import os
import re
import sys


def keyfile_escape(v):
    lead = len(v) - len(v.lstrip(" "))
    trail = len(v) - len(v.rstrip(" "))
    out = []
    for i, c in enumerate(v):
        if c == " " and (i < lead or i >= len(v) - trail):
            out.append("\\s")
        else:
            out.append({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c, c))
    return "".join(out)


text = open(sys.argv[1], encoding="utf-8").read()
text = re.sub(
    r"\$\{SECRET:([a-z0-9_]+)\|keyfile\}",
    lambda m: keyfile_escape(os.environ["E2E_" + m.group(1).upper()]),
    text,
)
sys.stdout.write(text)
