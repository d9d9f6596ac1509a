#!/usr/bin/env python3
"""Runs h2rs's five HTTP/2-downgrade smuggling detections against localhost:PORT.

h2rs stops with a traceback when the server closes the connection on a malformed request
(which is how the gateway refuses a header value with CR/LF); here each detection runs on its
own and such a refusal counts as "refused", which is not vulnerable. Exits 1 when h2rs reports a
detection as potentially vulnerable.
"""
import ssl
import sys

from h2rs import h2rs

h2rs.hostname = "localhost"
h2rs.tlsport = int(sys.argv[1])
h2rs.timeout = int(sys.argv[2]) if len(sys.argv) > 2 else 5
h2rs.user_agent = "portcullis-conformance"

h2rs.check()
vulnerable = []
for name, detect in [
    ("H2.CL", h2rs.h2cl_detect),
    ("H2.CL (CRLF)", h2rs.h2clcrlf_detect),
    ("H2.TE", h2rs.h2te_detect),
    ("H2.TE (CRLF)", h2rs.h2tecrlf_detect),
    ("HTTP/2 request tunnelling", h2rs.h2tunnel_detect),
]:
    try:
        found = detect()
        verdict = "POTENTIALLY VULNERABLE" if found else "not vulnerable"
    except (ssl.SSLError, ConnectionError, OSError) as e:
        found, verdict = False, f"refused (connection closed by the gateway: {type(e).__name__})"
    print(f"  {name}: {verdict}")
    if found:
        vulnerable.append(name)
if vulnerable:
    print("h2rs: potentially vulnerable to " + ", ".join(vulnerable))
    sys.exit(1)
print("h2rs: 5 of 5 detections report nothing")
