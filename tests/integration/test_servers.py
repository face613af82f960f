"""The test servers themselves: a port taken between its pick and the server's bind."""

from __future__ import annotations

import socket
from pathlib import Path

from tests import servers


def test_seaweedfs_starts_again_on_fresh_ports_when_one_is_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        picks: list[list[int]] = []

        def pick_ports(count: int) -> list[int]:
            ports = servers.free_ports(count)
            if not picks:
                ports[4] = port  # the filer's: as if another test bound it meanwhile
            picks.append(ports)
            return ports

        handle = servers.start_seaweedfs(tmp_path, sse_kek=False, pick_ports=pick_ports)
        try:
            assert len(picks) == 2 and port not in picks[1]
            assert handle.endpoint == f"http://127.0.0.1:{picks[1][6]}"
            first = (tmp_path / "seaweedfs-attempt1.log").read_text(errors="replace")
            assert f"listen tcp 127.0.0.1:{port}: bind: address already in use" in first
            assert handle.process.poll() is None  # the second weed is up and serving
        finally:
            handle.stop()
