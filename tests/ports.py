"""Ports for the test servers, on 127.0.0.1.

A server we own binds port 0 and reports the port it got (moto, the IMDS mock); these are
for the others: a port that refuses connections (:func:`closed_port`), ports picked free for
a server that must be told its ports up front and is started again when one was taken
(:func:`free_ports`: SeaweedFS), and a port no other process can take before its listener
binds it (:func:`rendezvous_port`: torchrun's rendezvous).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections while the block runs: bound here and
    never listened on, so no other test (or xdist worker) can take it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def rendezvous_port() -> int:
    """A port for a listener that must be named before it binds and that cannot report the
    port it got (torchrun's rendezvous: every node is told it up front).

    Drawn from below the kernel's ephemeral range, where no ``bind(0)`` and no outgoing
    connection on this machine can take it between this pick and its bind; each xdist
    worker draws from a slice of its own, and the port is checked free now (a second run
    of the suite on the same machine could hold it)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = low - 4096 + 256 * (int(worker) % 16 if worker.isdigit() else 0)
    candidates = list(range(first, first + 256))
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {first}-{first + 255} for a rendezvous")


def free_port() -> int:
    """One port as :func:`free_ports` picks them: free now only, so the caller must start
    again on another when it was taken (a server we own binds port 0 instead)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (sockets held open together so they differ), free
    right now only: someone may take one before the caller binds it, so the caller starts
    again on others when that happens (:func:`start_seaweedfs`)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
