"""README's interruption rehearsal, run as printed (only the mock's port is its own pick):
interrupted with exit 75, cleared, resumed to the end, the mock stopped."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agentproc import REPO, agent_env

README = REPO / "README.md"


def rehearsal_block() -> str:
    text = README.read_text()
    start = text.index("Rehearse a spot interruption")
    match = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert match, "no sh block after 'Rehearse a spot interruption'"
    return match.group(1)


@pytest.mark.long
@pytest.mark.skipif(shutil.which("curl") is None, reason="the rehearsal uses curl")
def test_the_rehearsal_as_printed(tmp_path: Path) -> None:
    block = rehearsal_block()
    assert block.count("--job-id rehearsal") == 2 and "--job-id primes" not in block
    # The mock binds a port of the kernel's choosing (--port 0) and prints it: the script
    # reads it from that line, as a person would copy the export it suggests.
    mock_out = shlex.quote(str(tmp_path / "imds-mock.out"))
    script, started = re.subn(
        r"(imds-mock --notice-after \S+) &", rf"\1 --port 0 > {mock_out} &", block, count=1
    )
    assert started == 1, block
    script = script.replace("127.0.0.1:1338", "127.0.0.1:$MOCK_PORT")
    # `spot-agent` and `python` as a user's venv would have them, running this checkout
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "spot-agent").write_text(f'#!/bin/sh\nexec {sys.executable} -m agent "$@"\n')
    (bin_dir / "spot-agent").chmod(0o755)
    os.symlink(sys.executable, bin_dir / "python")
    env = agent_env(tmp_path)
    for name in ("SPOT_AGENT_IMDS", "SPOT_AGENT_CHECKPOINT_URI"):  # the README sets neither
        env.pop(name)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    # wait for the mock's line before the first run, as a person typing would
    ready = (
        "for _ in $(seq 600); do MOCK_PORT=$(sed -n "
        "'s|.*export AWS_EC2_METADATA_SERVICE_ENDPOINT=http://127.0.0.1:\\([0-9][0-9]*\\)$|\\1|p' "
        f'{mock_out}); [ -n "$MOCK_PORT" ] && break; sleep 0.1; done\n'
    )
    script = script.replace("export AWS_EC2", ready + "export AWS_EC2", 1)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    events = [
        json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"timestamp"')
    ]
    exits = [e for e in events if e["event"] == "agent.exit"]
    assert [e["exit_code"] for e in exits] == [75, 0], out
    assert any(e["event"] == "notice.interruption" and e["source"] == "imds:spot" for e in events)
    restored = [e for e in events if e["event"] == "restore.done"]
    assert len(restored) == 1 and restored[0]["sequence"] >= 1, out
    assert "resuming at" in done.stdout
    assert "primes below 3,000,000,000: 144,449,537" in done.stdout, out
    printed = (tmp_path / "imds-mock.out").read_text()
    assert re.search(r"ENDPOINT=http://127\.0\.0\.1:[1-9][0-9]*$", printed, re.M), printed
    assert done.returncode == 0, out  # the last line (kill %1; unset ...) succeeded: mock stopped
