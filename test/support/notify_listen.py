#!/usr/bin/env python3
"""A systemd notify socket for tests: binds a unix datagram socket (argv[1]) and writes
each message as one JSON line {"t": monotonic seconds, "msg": text} to argv[2]."""
import json
import socket
import sys
import time

s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as out:
    while True:
        data = s.recv(65536)
        out.write(json.dumps({"t": time.monotonic(), "msg": data.decode("utf-8", "replace")}) + "\n")
        out.flush()
