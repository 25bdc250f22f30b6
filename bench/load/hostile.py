#!/usr/bin/env python3
"""bench/load/hostile.py: issue 17's attack classes against `pixseek serve`.

Starts the given pixseek binary (`serve --db DB`, API key "k1secret", 8
threads) on 127.0.0.1 and, one class at a time, prints one JSON row: what the
server answered, its RSS before and after (and the peak seen), and how long
GET /healthz took while the attack ran. The attacks come from 127.0.0.1, the
health checks from 127.0.0.2 (another client).

  bench/load/hostile.py PIXSEEK_BINARY DB [--label before|after]

Classes: a 300 MB chunked body to /api/v1/search; a request with a million
headers; 50 slowloris connections (one header byte a second); two pipelined
requests in one packet; two conflicting Content-Length headers; the
Authorization header "Bearer k%31secret" (the key is k1secret).
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

PORT = 18431


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def connect(timeout=30, source="127.0.0.1"):
    return socket.create_connection(("127.0.0.1", PORT), timeout=timeout,
                                    source_address=(source, 0))


def status_of(data):
    line = data.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def read_some(s, wait=5.0):
    s.settimeout(wait)
    out = b""
    try:
        while b"\r\n\r\n" not in out:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, OSError):
        pass
    return out


def healthz_ms(timeout=20.0):
    """GET /healthz from another address than the attacks' (127.0.0.2): the
    per-client connection cap is not what it measures."""
    start = time.monotonic()
    try:
        s = connect(timeout, source="127.0.0.2")
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = read_some(s, timeout)
        s.close()
        if status_of(data) != 200:
            return None
    except OSError:
        return None
    return round((time.monotonic() - start) * 1000, 1)


class PeakRss(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.05)


def attack(pid, name, fn):
    before = rss_kb(pid)
    peak = PeakRss(pid)
    peak.start()
    result = {}
    health = []

    def probe():
        time.sleep(1.0)
        health.append(healthz_ms())

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        result = fn()
    except OSError as e:
        result = {"client_error": str(e)}
    prober.join()
    peak.stop = True
    peak.join()
    row = {"attack": name, **result, "rss_before_kb": before, "rss_peak_kb": peak.peak,
           "rss_after_kb": rss_kb(pid), "healthz_ms_during": health[0] if health else None}
    return row


def chunked_body():
    s = connect()
    s.sendall(b"POST /api/v1/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
    sent = 0
    try:
        while sent < 300 << 20:
            s.sendall(chunk)
            sent += 0x100000
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    data = read_some(s, 30)
    s.close()
    return {"status": status_of(data), "mb_sent_before_refusal": sent >> 20}


def million_headers():
    s = connect()
    s.sendall(b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n")
    block = b"X-A: b\r\n" * 10000
    sent = 0
    try:
        for _ in range(100):
            s.sendall(block)
            sent += 10000
        s.sendall(b"\r\n")
    except OSError:
        pass
    data = read_some(s, 30)
    s.close()
    return {"status": status_of(data), "headers_sent": sent}


def slowloris():
    conns = []
    for _ in range(50):
        try:
            c = connect()
            c.sendall(b"G")
            conns.append(c)
        except OSError:
            break
    stop = time.monotonic() + 15
    rest = b"ET / HTTP/1.1\r\nHost: x\r\n"
    i = 0
    latencies = []
    while time.monotonic() < stop and i < len(rest):
        for c in conns:
            try:
                c.sendall(rest[i:i + 1])
            except OSError:
                pass
        i += 1
        if i in (3, 8):
            latencies.append(healthz_ms())
        time.sleep(1)
    alive = 0
    for c in conns:
        try:
            c.setblocking(False)
            data = c.recv(1024)
            alive += 0 if data == b"" or status_of(data) else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
        c.close()
    return {"connections": len(conns), "healthz_ms_at_3s_and_8s": latencies,
            "still_open_after_15s": alive}


def pipelined():
    s = connect()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n"
              b"Connection: close\r\n\r\n")
    s.settimeout(3)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    return {"responses": data.count(b"HTTP/1.1 200")}


def conflicting_length():
    s = connect()
    s.sendall(b"POST /api/v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 15\r\nContent-Length: 16\r\n\r\n{\"image_id\": 1}x")
    data = read_some(s, 5)
    s.close()
    return {"status": status_of(data)}


def encoded_key():
    s = connect()
    s.sendall(b"POST /api/v1/images HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k%31secret\r\n"
              b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    data = read_some(s, 5)
    s.close()
    # 401/403: the key was refused; 400: it was accepted and the empty body refused.
    return {"status": status_of(data)}


def main():
    binary, db = sys.argv[1], sys.argv[2]
    label = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--label" else binary
    env = dict(os.environ, PIXSEEK_API_KEYS="k1secret", OMP_WAIT_POLICY="PASSIVE")
    server = subprocess.Popen([binary, "serve", "--db", db, "--port", str(PORT), "--threads", "8"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if healthz_ms(1) is not None:
                break
            time.sleep(0.1)
        for name, fn in [("chunked 300 MB body", chunked_body), ("a million headers", million_headers),
                         ("slowloris x50", slowloris), ("two pipelined requests", pipelined),
                         ("conflicting Content-Length", conflicting_length),
                         ("Bearer k%31secret (key k1secret)", encoded_key)]:
            row = attack(server.pid, name, fn)
            row["server"] = label
            print(json.dumps(row), flush=True)
            time.sleep(1)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
