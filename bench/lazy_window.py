#!/usr/bin/env python3
"""What `--durability lazy` may lose: the loss window, measured.

Starts a release `spread serve` with `lazy` durability, writes one path at a
steady rate (each write's value is its number), SIGKILLs the server at a
random moment, restarts it, and reads which write survived. The window is
the time between the ack of the last surviving write and the ack of the last
write acknowledged before the kill: what a crash cost. Repeated per
`--lazy-flush-ms` setting; prints one JSON object per setting.

A process kill loses what sled has not yet written to the file (the page
cache keeps what was written), so this measures the flush period; a machine
crash may lose the fsync on top of that.

Usage: bench/lazy_window.py [--runs N] [--flush-ms 100,1000]
(builds nothing: run `cargo build --release` first)
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "target", "release", "spread")


def start(data, flush_ms):
    proc = subprocess.Popen(
        [BINARY, "serve", "--listen", "127.0.0.1:0", "--data", data,
         "--durability", "lazy", "--lazy-flush-ms", str(flush_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r"listening on http://(\S+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    # Keep draining stdout so the server never blocks on it.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, m.group(1)


def put(addr, path, body):
    req = urllib.request.Request(f"http://{addr}/raw/{path}", data=body, method="PUT")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status


def get(addr, path):
    try:
        with urllib.request.urlopen(f"http://{addr}/raw/{path}", timeout=5) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def one_run(flush_ms, rate_hz=500):
    data = tempfile.mkdtemp(prefix="spread-lazy-")
    try:
        proc, addr = start(data, flush_ms)
        acked = []  # (number, ack time)
        run_for = random.uniform(1.0, 3.0)
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < run_for:
            i += 1
            put(addr, "lw/x", str(i).encode())
            acked.append((i, time.monotonic()))
            time.sleep(1 / rate_hz)
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        proc.wait()
        proc, addr = start(data, flush_ms)
        value = get(addr, "lw/x")
        proc.terminate()
        proc.wait()
        survived = int(value) if value else 0
        last_time = acked[-1][1]
        survived_time = acked[survived - 1][1] if survived else t0
        return {
            "acked": len(acked),
            "survived": survived,
            "lost_writes": len(acked) - survived,
            "window_ms": round((last_time - survived_time) * 1000, 1),
            "since_kill_ms": round((killed - survived_time) * 1000, 1),
        }
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--flush-ms", default="100,1000")
    args = ap.parse_args()
    if not os.path.exists(BINARY):
        raise SystemExit(f"{BINARY} not found: cargo build --release first")
    for flush_ms in [int(x) for x in args.flush_ms.split(",")]:
        runs = [one_run(flush_ms) for _ in range(args.runs)]
        windows = sorted(r["window_ms"] for r in runs)
        print(json.dumps({
            "lazy_flush_ms": flush_ms,
            "runs": len(runs),
            "window_ms_max": windows[-1],
            "window_ms_median": windows[len(windows) // 2],
            "lost_writes_max": max(r["lost_writes"] for r in runs),
            "each": runs,
        }))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
