"""Bad input the agent meets at run time: each is refused or reported in one line naming
what is wrong, and no committed checkpoint is ever damaged by it."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentproc import (
    agent_env,
    cli,
    run_agent,
    start_agent,
    without_file_permission_override,
)

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("spot-agent: error: "), lines[0]
    return lines[0]


def workdir(tmp: Path, job: str) -> Path:
    return tmp / "state" / "spot-agent" / "jobs" / job / "checkpoint"


def restored(tmp: Path, job: str, name: str = "restored") -> dict[str, bytes]:
    dst = tmp / name
    out = cli(tmp, "checkpoints", "restore", "--job-id", job, "--to", str(dst))
    assert out.returncode == 0, out.stderr
    return {
        p.relative_to(dst).as_posix(): p.read_bytes()
        for p in dst.rglob("*")
        if p.is_file() and ".spot-agent" not in p.parts
    }


# -- settings that cannot work: exit 2, one line naming the setting, nothing started ------


@pytest.mark.parametrize(
    "args, env, starts_with, says",
    [
        (
            ["--checkpoint-uri", "s3://Bad_Bucket/x"],
            {},
            "--checkpoint-uri (SPOT_AGENT_CHECKPOINT_URI)",
            "must be lower case",
        ),
        (
            ["--checkpoint-uri", "s3://ab/x"],
            {},
            "--checkpoint-uri (SPOT_AGENT_CHECKPOINT_URI)",
            "3 to 63 characters",
        ),
        (
            ["--checkpoint-uri", "s3://192.168.1.1/x"],
            {},
            "--checkpoint-uri (SPOT_AGENT_CHECKPOINT_URI)",
            "192.168.1.1",
        ),
        (
            ["--checkpoint-uri", "s3://good-bucket/x"],
            {"SPOT_AGENT_SSE": "AES512"},
            "--sse (SPOT_AGENT_SSE)",
            "expected one of default, AES256, aws:kms",
        ),
        (
            ["--checkpoint-uri", "s3://good-bucket/x"],
            {"SPOT_AGENT_S3_ADDRESSING_STYLE": "sideways"},
            "--s3-addressing-style (SPOT_AGENT_S3_ADDRESSING_STYLE)",
            "expected one of auto, virtual, path",
        ),
        (
            ["--checkpoint-keep", "-3"],
            {},
            "--checkpoint-keep (SPOT_AGENT_CHECKPOINT_KEEP)",
            "got '-3'",
        ),
        (
            [],
            {"SPOT_AGENT_CHECKPOINT_KEEP": "ten"},
            "--checkpoint-keep (SPOT_AGENT_CHECKPOINT_KEEP)",
            "got 'ten'",
        ),
        (
            ["--imds-interval=-1s"],
            {},
            "--imds-interval (SPOT_AGENT_IMDS_INTERVAL)",
            "must not be negative",
        ),
    ],
)
def test_bad_settings_exit_2_naming_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], starts_with: str, says: str
) -> None:
    r = run_agent(tmp_path, ["--job-id", "bad", *args], ["true"], env=agent_env(tmp_path, env))
    assert r.proc.returncode == 2
    line = one_error_line(r.stderr)
    assert line.startswith(f"spot-agent: error: {starts_with}: "), line
    assert says in line, line
    assert r.stdout == ""  # nothing ran, nothing was claimed


def test_checkpoint_dir_that_is_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    for target, says in (
        (blocker, "exists and is not a directory"),
        (blocker / "below", "Not a directory"),
    ):
        r = run_agent(tmp_path, ["--job-id", "f", "--checkpoint-dir", str(target)], ["true"])
        assert r.proc.returncode == 2, r.stdout + r.stderr
        line = one_error_line(r.stderr)
        assert line.startswith("spot-agent: error: --checkpoint-dir (SPOT_AGENT_CHECKPOINT_DIR):")
        assert str(target) in line and says in line, line
        assert r.stdout == ""
    assert blocker.read_text() == "mine"
    assert not (tmp_path / "store" / "f").exists()  # refused before an attempt was claimed


def test_checkpoint_dir_that_is_not_writable_is_a_configuration_error(tmp_path: Path) -> None:
    prefix = without_file_permission_override()
    target = tmp_path / "read-only"
    target.mkdir()
    target.chmod(0o555)
    r = run_agent(
        tmp_path, ["--job-id", "ro", "--checkpoint-dir", str(target)], ["true"], prefix=prefix
    )
    assert r.proc.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r.stderr)
    assert line == (
        "spot-agent: error: --checkpoint-dir (SPOT_AGENT_CHECKPOINT_DIR): "
        f"cannot write in {target}: Permission denied"
    )


# -- a checkpoint dir holding something the agent cannot read ------------------------------

UNREADABLE_JOB = """
    import checkpoint, os, sys, time
    d = os.environ["CHECKPOINT_DIR"]
    checkpoint.save_json("state.json", {"step": 1})
    assert checkpoint.request_sync(wait=20)
    if sys.argv[1] == "file":
        with open(os.path.join(d, "locked.bin"), "w") as fh:
            fh.write("x")
        os.chmod(os.path.join(d, "locked.bin"), 0)
    else:
        os.mkdir(os.path.join(d, "locked"))
        open(os.path.join(d, "locked", "inside"), "w").close()
        os.chmod(os.path.join(d, "locked"), 0)
    checkpoint.save_json("state.json", {"step": 2})
    if sys.argv[2] == "wait":  # declare step 2: the agent cannot freeze it (unreadable)
        assert not checkpoint.request_sync(freeze_timeout=1)
    print("ready", flush=True)
    if sys.argv[2] == "wait":
        time.sleep(60)
"""


@pytest.mark.parametrize("kind, name", [("file", "locked.bin"), ("dir", "locked")])
def test_unreadable_entry_fails_the_sync_loudly_and_keeps_the_last_checkpoint(
    tmp_path: Path, kind: str, name: str
) -> None:
    prefix = without_file_permission_override()
    job = f"unreadable-{kind}"
    r = run_agent(tmp_path, ["--job-id", job], [*py(UNREADABLE_JOB), kind, "exit"], prefix=prefix)
    assert r.proc.returncode == 74, r.stdout + r.stderr  # exited 0, final checkpoint failed
    failed = r.event("sync.final_failed")
    assert failed["restorable"] == 1
    error = failed["error"]
    assert "\n" not in error and "Permission denied" in error
    assert error.endswith(f"{workdir(tmp_path, job) / name}: Permission denied"), error
    assert "Traceback" not in r.stderr
    with contextlib.suppress(OSError):
        (workdir(tmp_path, job) / name).chmod(0o700)
    files = restored(tmp_path, job)
    assert list(files) == ["state.json"] and json.loads(files["state.json"]) == {"step": 1}


def test_unreadable_dir_at_an_interruption_still_stops_the_job_and_exits_79(
    tmp_path: Path,
) -> None:
    """Was a traceback (exit 1) that left the job running: the reserve estimate walks the
    dir on the main thread. The job declared a state holding the unreadable dir, so the
    final checkpoint (read in place once the job is gone) fails: the exit is 79, not 75.
    (Had it declared nothing since its first sync, that sync would be its final checkpoint
    and the exit 75: the dir is then never read.)"""
    prefix = without_file_permission_override()
    r = start_agent(
        tmp_path, ["--job-id", "intr"], [*py(UNREADABLE_JOB), "dir", "wait"], prefix=prefix
    )
    r.wait_for(lambda: r.has_line("ready"), what="the job to lock a directory")
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 79, r.stdout + r.stderr
    assert r.event("shutdown.child_exited")["exit_code"] == 128 + signal.SIGTERM
    assert "cannot read directory" in r.event("sync.final_failed")["error"]
    assert r.event("agent.exit")["restorable"] == 1
    assert "Traceback" not in r.stderr
    (workdir(tmp_path, "intr") / "locked").chmod(0o700)
    files = restored(tmp_path, "intr")
    assert list(files) == ["state.json"] and json.loads(files["state.json"]) == {"step": 1}


# -- a disk that fills up during restore ---------------------------------------------------


def _commit_big_checkpoint(tmp: Path, job: str, size: int) -> None:
    r = run_agent(
        tmp,
        ["--job-id", job],
        py(f"""
        import checkpoint
        checkpoint.save_bytes("big.bin", bytes(range(256)) * ({size} // 256))
        checkpoint.save_json("state.json", {{"step": 2}})
    """),
    )
    assert r.proc.returncode == 0, r.stderr


def _assert_restore_failed_cleanly(r: object, ckdir: Path, says: str) -> None:
    from tests.agentproc import AgentRun

    assert isinstance(r, AgentRun)
    assert r.proc.returncode == 73, r.stdout + r.stderr
    failed = r.event("restore.failed")
    error = failed["error"]
    assert "\n" not in error and error.startswith("cannot restore checkpoint 1 into "), error
    assert f"big.bin{says}" in error, error
    assert not any(e["event"] == "child.started" for e in r.events())
    # Nothing half-written became the job's state: the old state is what it was.
    leftovers = sorted(
        p.relative_to(ckdir).as_posix() for p in ckdir.rglob("*") if ".spot-agent" not in p.parts
    )
    assert leftovers == ["state.json"], leftovers
    assert json.loads((ckdir / "state.json").read_text()) == {"step": 1}


def test_file_size_limit_during_restore_exits_73_and_leaves_the_old_state(tmp_path: Path) -> None:
    _commit_big_checkpoint(tmp_path, "fsize", 4 << 20)
    ckdir = workdir(tmp_path, "fsize")
    (ckdir / "big.bin").unlink()
    (ckdir / "state.json").write_text('{"step": 1}')  # an older state, to be kept
    limit = 1 << 20

    def cap_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = run_agent(tmp_path, ["--job-id", "fsize"], ["true"], preexec_fn=cap_file_size)
    _assert_restore_failed_cleanly(r, ckdir, " (4194304 bytes): File too large")
    # The committed checkpoint is intact: a restore without the limit gets every byte.
    files = restored(tmp_path, "fsize")
    assert len(files["big.bin"]) == 4 << 20 and json.loads(files["state.json"]) == {"step": 2}


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that really fills up (ENOSPC). Needs mount(2) rights."""
    mnt = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here ({out.stderr.strip()}); RLIMIT_FSIZE "
            "test covers the same path"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_during_restore_exits_73_and_leaves_the_old_state(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    _commit_big_checkpoint(tmp_path, "full", 4 << 20)
    ckdir = small_tmpfs / "checkpoint"
    ckdir.mkdir()
    (ckdir / "state.json").write_text('{"step": 1}')
    r = run_agent(tmp_path, ["--job-id", "full", "--checkpoint-dir", str(ckdir)], ["true"])
    _assert_restore_failed_cleanly(r, ckdir, ": No space left on device")
    assert json.loads(restored(tmp_path, "full")["state.json"]) == {"step": 2}


# -- a job that is gone before the agent is ready ------------------------------------------


@pytest.mark.parametrize(
    "command, code",
    [
        (["sh", "-c", 'echo done > "$CHECKPOINT_DIR/out"; exit 7'], 7),
        ([PY, "-c", "import os; open(os.environ['CHECKPOINT_DIR'] + '/out', 'w'); os._exit(0)"], 0),
        (["sh", "-c", 'echo done > "$CHECKPOINT_DIR/out"; kill -KILL $$'], 128 + 9),
    ],
)
def test_job_that_exits_at_once_passes_its_code_and_is_checkpointed(
    tmp_path: Path, command: list[str], code: int
) -> None:
    for attempt in range(1, 4):  # a race would show up in some of them
        (workdir(tmp_path, "quick") / "out").unlink(missing_ok=True)
        r = run_agent(tmp_path, ["--job-id", "quick"], command)
        assert r.proc.returncode == code, r.stdout + r.stderr
        assert r.event("child.exited")["exit_code"] == code
        assert r.event("agent.exit")["exit_code"] == code
        synced = [e for e in r.events() if e["event"] in ("sync.committed", "sync.unchanged")]
        assert [e["reason"] for e in synced] == ["exit"], synced
        if attempt == 1:
            assert synced[0]["event"] == "sync.committed" and synced[0]["files"] == 1
    assert set(restored(tmp_path, "quick")) == {"out"}


def test_spawn_failure_after_restore_leaves_the_checkpoint_alone(tmp_path: Path) -> None:
    ok = run_agent(tmp_path, ["--job-id", "nf"], ["sh", "-c", 'echo 1 > "$CHECKPOINT_DIR/s"'])
    assert ok.proc.returncode == 0
    r = run_agent(tmp_path, ["--job-id", "nf"], [str(tmp_path / "no-such-program")])
    assert r.proc.returncode == 127
    assert r.event("child.spawn_failed")["error"].endswith("no-such-program: command not found")
    assert restored(tmp_path, "nf") == {"s": b"1\n"}
    not_exec = tmp_path / "not-executable.sh"
    not_exec.write_text("#!/bin/sh\n")
    not_exec.chmod(0o644)
    r = run_agent(
        tmp_path,
        ["--job-id", "nf"],
        [str(not_exec)],
        prefix=without_file_permission_override() if os.geteuid() == 0 else (),
    )
    assert r.proc.returncode == 126, r.stdout + r.stderr
    assert restored(tmp_path, "nf", "again") == {"s": b"1\n"}
