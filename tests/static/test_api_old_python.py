"""The job's side, ``import checkpoint``, runs on Python 3.9 with the standard library only:
the agent needs 3.11, a job's own interpreter may be older (Amazon Linux 2023, Ubuntu 22.04).

The interpreter: SPOT_AGENT_TEST_PYTHON39, else ``python3.9`` on PATH, else pyenv's; the
test is skipped, saying so, where none exists.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys, sysconfig
    before = set(sys.modules)
    import checkpoint
    assert checkpoint.directory().name == "ck", checkpoint.directory()
    checkpoint.save_json("state.json", {"step": 3})
    assert checkpoint.load_json("state.json") == {"step": 3}
    checkpoint.save_bytes("w.bin", b"weights")
    assert checkpoint.load_bytes("w.bin") == b"weights"
    with checkpoint.atomic_write("notes.txt", "w") as f:
        f.write("ok")
    checkpoint.report_progress(step=3)
    assert checkpoint.request_sync(wait=0.1) is False  # no agent: nothing to ask
    assert checkpoint.interrupted() is False and checkpoint.last_sync() is None
    stdlib = sysconfig.get_paths()["stdlib"]
    foreign = sorted(
        name for name in set(sys.modules) - before
        if name.split(".")[0] != "checkpoint"
        and getattr(sys.modules[name], "__file__", None)
        and not sys.modules[name].__file__.startswith(stdlib)
    )
    assert not foreign, foreign
    print("ok", sys.version_info[:2])
""")


def python39() -> str | None:
    candidates = [os.environ.get("SPOT_AGENT_TEST_PYTHON39"), shutil.which("python3.9")]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(
        glob.glob(os.path.join(pyenv_root, "versions", "3.9*", "bin", "python3.9"))
    )
    for exe in candidates:
        if not exe:
            continue
        try:  # a pyenv shim is on PATH even where that version is not selected
            out = subprocess.run(
                [exe, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if out.stdout.strip() == "True":
            return exe
    return None


def test_the_job_api_runs_on_python_3_9(tmp_path: Path) -> None:
    exe = python39()
    if exe is None:
        pytest.skip("no Python 3.9 here (set SPOT_AGENT_TEST_PYTHON39, or install python3.9)")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "CHECKPOINT_DIR": str(tmp_path / "ck"),
        "PYTHONNOUSERSITE": "1",
    }
    out = subprocess.run(
        [exe, "-I", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok (3, 9)"
    assert (tmp_path / "ck" / "notes.txt").read_text() == "ok"
