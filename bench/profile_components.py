#!/usr/bin/env python3
"""Groups a flat `perf report --sort dso,symbol` into components: where a proxy's CPU goes.

    perf report -i perf.data --no-children --sort dso,symbol --stdio --percent-limit 0 \
        | bench/profile_components.py
"""
import re
import sys

RULES = [
    ("kernel: TCP/IP, syscalls, scheduling", lambda d, s: d.startswith("[kernel")),
    ("libc (memcpy/memmove, other)", lambda d, s: d.startswith("libc")),
    ("vdso (clock reads)", lambda d, s: d.startswith("[vdso")),
    ("mimalloc (allocation)", lambda d, s: s.startswith(("_mi_", "mi_"))),
    ("rustls + ring (TLS records, AES-GCM)", lambda d, s: re.search(r"\brustls|ring_core|\bring::", s)),
    ("tracing + logging (access log, redaction)", lambda d, s: re.search(r"tracing|redact|serde_json|observability", s)),
    ("portcullis decisions (filters, auth, limits, headers)", lambda d, s: s.startswith(("portcullis::", "<portcullis::"))),
    ("pingora (HTTP/1 framing, proxy loop, timers)", lambda d, s: "pingora" in s),
    ("tokio (runtime, I/O readiness, wakers)", lambda d, s: "tokio" in s),
    ("http/bytes/httparse (header maps, buffers)", lambda d, s: re.search(r"\bhttp::|\bbytes::|httparse", s)),
]


def main():
    totals = {}
    other = 0.0
    for line in sys.stdin:
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*?)\s*$", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        for name, rule in RULES:
            if rule(dso, sym):
                totals[name] = totals.get(name, 0.0) + pct
                break
        else:
            other += pct
    for name, _ in RULES:
        print(f"{totals.get(name, 0.0):6.1f}%  {name}")
    print(f"{other:6.1f}%  other (std, core, closures of several crates)")


main()
