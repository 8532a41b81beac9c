#!/usr/bin/env python3
"""What one ack costs Redis with n jobs held by a worker (test/bench/run.sh --mode ack).

Starts a private redis-server on 127.0.0.1 (no persistence), and for each n holds n
runner-shaped jobs two ways: a list, acked the old way (LREM -1 of a random entry, which
walks the list from its tail), and a hash of job text -> copies, acked the worker's way
(the script of LUA_ACK in src/worker/queue.c: one copy out, O(1)). Each ack picks a random
held job (answers come back in any order) and the job is put back after it, so n stays
n. Redis's own time per call is read from its slow log (slowlog-log-slower-than 0):
median and 90th percentile in microseconds, one table.

    test/bench/ack.py [--sizes 64,1000,10000,100000] [--calls 500] [--seed 1]
"""
import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

# The worker's ack (src/worker/queue.c: LUA_TAKE, LUA_ACK), word for word.
ACK = ("local function take(h, v)\n"
       "  local c = tonumber(redis.call('HGET', h, v))\n"
       "  if not c then return 0 end\n"
       "  if c > 1 then redis.call('HINCRBY', h, v, -1) else redis.call('HDEL', h, v) end\n"
       "  return 1\n"
       "end\n"
       "return take(KEYS[1], ARGV[1])\n")


class Redis:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b":"):
            return int(rest) if kind == b":" else rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

    def cmd(self, *args):
        self.s.sendall(self.encode(*args))
        return self.read()

    def pipe(self, commands):
        self.s.sendall(b"".join(self.encode(*c) for c in commands))
        return [self.read() for _ in commands]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def job(i):
    return ('{"execution_id":%d,"region":"us-east","question_index":0,"retry_attempt":1,'
            '"enqueued_at":"2026-12-06T20:00:00.000Z","id":"held-%d"}' % (100000 + i, i))


def figures(r, name):
    """median and p90 (us) of the slow log's calls named `name`, then a reset."""
    entries = r.cmd("SLOWLOG", "GET", "-1")
    r.cmd("SLOWLOG", "RESET")
    us = sorted(int(e[2]) for e in entries if e[3] and e[3][0].upper() == name)
    if not us:
        return 0, 0, 0
    return len(us), us[len(us) // 2], us[min(len(us) - 1, len(us) * 9 // 10)]


def measure(r, n, calls, rng):
    jobs = [job(i) for i in range(n)]
    r.cmd("DEL", "held:list", "held:hash")
    for k in range(0, n, 1000):
        chunk = jobs[k:k + 1000]
        r.pipe([["RPUSH", "held:list"] + chunk,
                ["HSET", "held:hash"] + [x for j in chunk for x in (j, "1")]])
    picks = [rng.randrange(n) for _ in range(calls)]
    r.cmd("SLOWLOG", "RESET")
    for i in picks:
        if r.cmd("LREM", "held:list", "-1", jobs[i]) != 1:
            raise RuntimeError("LREM found nothing")
        r.cmd("LPUSH", "held:list", jobs[i])  # (a new pop lands at the head)
    lrem = figures(r, "LREM")
    for i in picks:
        if r.cmd("EVAL", ACK, "1", "held:hash", jobs[i]) != 1:
            raise RuntimeError("the ack found nothing")
        r.cmd("HSET", "held:hash", jobs[i], "1")
    ack = figures(r, "EVAL")
    info = r.cmd("MEMORY", "USAGE", "held:hash", "SAMPLES", "0")
    linfo = r.cmd("MEMORY", "USAGE", "held:list", "SAMPLES", "0")
    return lrem, ack, info / n, linfo / n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="64,1000,10000,100000")
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    server = shutil.which("redis-server") or sys.exit("ack: redis-server not found")
    d = tempfile.mkdtemp(prefix="retryq-ack-")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", d, "--slowlog-log-slower-than", "0",
                             "--slowlog-max-len", str(4 * a.calls + 100)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                r = Redis(port)
                r.cmd("PING")
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("ack: redis-server did not start")
                time.sleep(0.05)
        version = r.cmd("INFO", "server").split("redis_version:")[1].split()[0]
        rng = random.Random(a.seed)
        print("ack cost with n jobs held by one worker: Redis %s, %d acks of random jobs each, "
              "Redis's time per call from its slow log (us)" % (version, a.calls))
        print("%10s | %14s %14s | %14s %14s | %12s %12s" % (
            "n held", "LREM median", "LREM p90", "hash median", "hash p90", "B/job list", "B/job hash"))
        for n in (int(x) for x in a.sizes.split(",")):
            lrem, ack, hb, lb = measure(r, n, a.calls, rng)
            print("%10d | %14d %14d | %14d %14d | %12.0f %12.0f" % (
                n, lrem[1], lrem[2], ack[1], ack[2], lb, hb))
            sys.stdout.flush()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
