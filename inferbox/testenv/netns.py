"""A private network namespace with only loopback, for the tests.

The embedded API server dials a Service's ClusterIP (10.0.0.0/24 here, not loopback) to call a
webhook. In a namespace whose only interface is ``lo`` such a dial finds no route and fails at
once, so no test can send a packet off 127.0.0.0/8. ``./quickstart test`` (and so CI) runs
pytest as ``unshare --net -- python -m inferbox.testenv.netns python -m pytest ...``: this module
brings ``lo`` up (a fresh namespace has it down) and execs the command.

``python -m inferbox.testenv.netns --check`` exits 0 when the caller is already isolated.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys
from pathlib import Path

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def interfaces() -> list[str]:
    """The network interfaces of this process' namespace (/proc/net/dev is per namespace)."""
    try:
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    except OSError:
        return []
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def isolated() -> bool:
    """True when loopback is this namespace's only interface."""
    return interfaces() == ["lo"]


def loopback_up() -> None:
    """Set ``lo`` up (as ``ip link set lo up``); needs CAP_NET_ADMIN in the namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | _IFF_UP, b""))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        return 0 if isolated() else 1
    if not argv:
        print("usage: python -m inferbox.testenv.netns COMMAND [ARG ...]  (inside `unshare --net`)", file=sys.stderr)
        return 2
    if not isolated():
        print(f"refusing: this network namespace has {interfaces()}, not only lo: run it under `unshare --net`",
              file=sys.stderr)
        return 2
    loopback_up()
    os.execvp(argv[0], argv)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
