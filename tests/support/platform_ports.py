"""Loopback ports that test operators allow as platform URLs (`--allowed-platform-url`).

The operator contacts only platform URLs it was told to trust (scheme, host and port exactly),
and every test starts its own emulator: so emulators (and fronts before them) bind ports from
one block chosen once per test session, and every operator a test starts allows that block.
The block lies below Linux's ephemeral range (32768+), so an outgoing connection never takes
one of its ports meanwhile.
"""

from __future__ import annotations

import itertools
import random
import socket
import threading

POOL_SIZE = 48
_LOW, _HIGH = 20000, 32000

_lock = threading.Lock()
_ports: tuple[int, ...] = ()
_turn = itertools.count()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def allowed_ports() -> tuple[int, ...]:
    """The session's block of ports (chosen on first use)."""
    global _ports
    with _lock:
        while not _ports:
            base = random.randrange(_LOW, _HIGH - POOL_SIZE)
            block = tuple(range(base, base + POOL_SIZE))
            if all(_bindable(port) for port in block):
                _ports = block
        return _ports


def allowed_urls() -> list[str]:
    return [f"http://127.0.0.1:{port}" for port in allowed_ports()]


def allowlist_args() -> list[str]:
    """The operator flags that allow every port of the block."""
    return [arg for url in allowed_urls() for arg in ("--allowed-platform-url", url)]


def take_port() -> int:
    """A port of the block that is free now (round robin, so a just-stopped one rests)."""
    ports = allowed_ports()
    for _ in range(len(ports) * 2):
        port = ports[next(_turn) % len(ports)]
        if _bindable(port):
            return port
    raise RuntimeError(f"every port of the allowed block {ports[0]}-{ports[-1]} is taken")
