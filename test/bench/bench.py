#!/usr/bin/env python3
"""Small helpers for test/bench/*.sh (standard library only).

  bench.py lpush KEY [BATCH]     stdin: one payload per line -> RESP "LPUSH KEY v1..vB"
                                 commands on stdout, for `redis-cli --pipe`
  bench.py logstats LOG          a retryq-worker log at debug level -> JSON: jobs taken and
                                 recorded, first take and last record (ms since the epoch),
                                 pop-to-ack latency percentiles (job.taken -> job.recorded)
  bench.py rusage OUT CMD...     runs CMD, writes "<wall s> <user s> <sys s> <max RSS KiB>" to OUT
                                 (like /usr/bin/time -f '%e %U %S %M'; CPU includes the
                                 descendants CMD waited for); exits with CMD's status
  bench.py pingprobe HOST PORT OUT  sends PING and waits for PONG, one every millisecond,
                                 until SIGTERM/SIGINT; then writes JSON to OUT: samples,
                                 p50/p99/max round trip in microseconds
  bench.py median V...           the median of the numbers given
  bench.py pct A B               100 * A / B, one decimal
"""
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime


def resp(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def cmd_lpush(key, batch=1000):
    key = key.encode()
    out = sys.stdout.buffer
    chunk = []
    for line in sys.stdin.buffer:
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        chunk.append(line)
        if len(chunk) >= batch:
            out.write(resp([b"LPUSH", key] + chunk))
            chunk = []
    if chunk:
        out.write(resp([b"LPUSH", key] + chunk))
    out.flush()


def parse_logfmt(line):
    """Just enough logfmt for the worker's lines: key=value or key="quoted \\" value"."""
    fields = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        eq = line.find("=", i)
        if eq < 0:
            break
        key = line[i:eq]
        i = eq + 1
        if i < n and line[i] == '"':
            i += 1
            val = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                val.append(line[i])
                i += 1
            i += 1
            fields[key] = "".join(val)
        else:
            sp = line.find(" ", i)
            sp = n if sp < 0 else sp
            fields[key] = line[i:sp]
            i = sp
    return fields


def ts_ms(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000.0


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


FROM_POP = re.compile(r"\((\d+) ms from pop\)")


def cmd_logstats(path):
    """Pop-to-ack from each job.recorded line: its time stamp and its "(N ms from pop)"
    (the worker's monotonic clock), so the worker can run at info level. Logs written
    without that note fall back to pairing job.taken lines (debug level)."""
    taken, lat = {}, []
    first_taken = last_recorded = None
    n_taken = n_recorded = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "event=job." not in line:
                continue
            d = parse_logfmt(line.rstrip("\n"))
            ev = d.get("event")
            if ev not in ("job.taken", "job.recorded"):
                continue
            t = ts_ms(d["ts"])
            key = (d.get("execution_id"), d.get("attempt"))
            if ev == "job.taken":
                n_taken += 1
                taken[key] = t
                first_taken = t if first_taken is None else min(first_taken, t)
                continue
            n_recorded += 1
            last_recorded = t if last_recorded is None else max(last_recorded, t)
            m = FROM_POP.search(d.get("msg", ""))
            if m:
                elapsed = int(m.group(1))
                lat.append(elapsed)
                taken.pop(key, None)
                first_taken = t - elapsed if first_taken is None else min(first_taken, t - elapsed)
            elif key in taken:
                lat.append(t - taken.pop(key))
    lat.sort()
    print(json.dumps({
        "taken": n_taken,
        "recorded": n_recorded,
        "first_taken_ms": first_taken,
        "last_recorded_ms": last_recorded,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else None,
    }))


def cmd_rusage(out, argv):
    start = time.monotonic()
    child = subprocess.Popen(argv)
    # Pass SIGTERM/SIGINT on (timeout(1) sends SIGTERM to this process).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: child.send_signal(s))
    while True:
        try:
            _, status, ru = os.wait4(child.pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.monotonic() - start
    with open(out, "w") as f:
        f.write("%.3f %.3f %.3f %d\n" % (wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss))
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)


def cmd_pingprobe(host, port, out):
    import socket
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: stop.append(s))
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts = []
    while not stop:
        t0 = time.perf_counter_ns()
        try:
            sock.sendall(b"PING\r\n")
            got = b""
            while not got.endswith(b"\r\n"):
                chunk = sock.recv(64)
                if not chunk:
                    raise ConnectionError("Redis closed the connection")
                got += chunk
        except InterruptedError:
            continue
        rtts.append((time.perf_counter_ns() - t0) // 1000)
        time.sleep(0.001)
    rtts.sort()
    with open(out, "w") as f:
        json.dump({"samples": len(rtts), "p50_us": percentile(rtts, 50),
                   "p99_us": percentile(rtts, 99), "max_us": rtts[-1] if rtts else None}, f)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "lpush":
        cmd_lpush(args[0], int(args[1]) if len(args) > 1 else 1000)
    elif cmd == "rusage":
        cmd_rusage(args[0], args[1:])
    elif cmd == "logstats":
        cmd_logstats(args[0])
    elif cmd == "pingprobe":
        cmd_pingprobe(args[0], args[1], args[2])
    elif cmd == "median":
        vals = [float(a) for a in args if a not in ("", "-", "nan")]
        print("%.6g" % statistics.median(vals) if vals else "-")
    elif cmd == "pct":
        a, b = float(args[0]), float(args[1])
        print("%.1f" % (100.0 * a / b) if b > 0 else "-")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
