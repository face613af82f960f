"""The Trainer and Lightning examples under the agent, each interrupted twice (SIGTERM to the
agent, then a spot notice from the metadata emulator) and resumed from the store, local and
SeaweedFS: the final line (every loss, a digest of the final weights) equals an
uninterrupted run's, bit for bit; every committed checkpoint restores to whole framework
checkpoints only (a ``checkpoint-N/`` or ``.ckpt`` is all there or absent); and with
``save_total_limit=1`` every restore finds one to resume from.

Real torch on the CPU, real transformers and Lightning, tiny models built from a config
(nothing is downloaded: ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.imds_mock import ImdsMock
from tests.agentproc import REPO, AgentRun, agent_env, start_agent

pytest.importorskip("torch")


@dataclass(frozen=True)
class Job:
    script: str
    args: tuple[str, ...]
    #: the framework's checkpoints inside the checkpoint dir
    subdir: str
    #: (restored subdir) -> the names of its checkpoints, each checked whole (asserts)
    check_whole: Callable[[Path], list[str]]
    #: the name check_whole gives the checkpoint saved when the stop came at step N
    stop_name: str
    #: the most checkpoints a commit may hold (the job's rotation)
    most: int


def whole_trainer_checkpoints(root: Path) -> list[str]:
    names = []
    for path in sorted(root.iterdir()):
        m = re.fullmatch(r"checkpoint-([0-9]+)", path.name)
        assert m, f"unexpected {path.name} in the Trainer's output dir"
        files = {p.name for p in path.iterdir()}
        needed = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
        assert needed | {"trainer_state.json"} <= files, f"{path.name} is partial: {files}"
        state = json.loads((path / "trainer_state.json").read_text())
        assert state["global_step"] == int(m.group(1)), path
        names.append(path.name)
    return names


def whole_lightning_checkpoints(root: Path) -> list[str]:
    import torch

    names = []
    for path in sorted(root.iterdir()):
        assert path.suffix == ".ckpt", f"unexpected {path.name} in the Lightning dir"
        assert zipfile.is_zipfile(path), f"{path.name} is partial"
        saved = torch.load(path, map_location="cpu", weights_only=False)
        assert saved["state_dict"] and saved["optimizer_states"], path.name
        names.append(f"{path.name}@{saved['global_step']}")
    return names


JOBS = {
    "trainer": Job(
        "hf_trainer.py",
        ("--steps", "24", "--save-steps", "5", "--save-total-limit", "1"),
        "trainer",
        whole_trainer_checkpoints,
        "checkpoint-{step}",
        most=1,  # save_total_limit=1: the rotation and the new save are one save point
    ),
    "lightning": Job(
        "lightning_fit.py",
        ("--steps", "24", "--save-every", "5"),
        "lightning",
        whole_lightning_checkpoints,
        "interrupted.ckpt@{step}",
        # top 1, interrupted.ckpt, and the file resumed from (ModelCheckpoint keeps it)
        most=4,
    ),
}

#: the restore of every committed checkpoint of a job, in one process (the CLI's own code)
RESTORE_ALL = textwrap.dedent("""
    import contextlib, io, json, sys
    from agent.cli import main
    into, common = sys.argv[1], sys.argv[2:]
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        assert main(["checkpoints", "list", "--json", *common]) == 0
    for row in json.loads(listing.getvalue()):
        n = row["sequence"]
        with contextlib.redirect_stdout(sys.stderr):
            code = main(["checkpoints", "restore", str(n), "--to", f"{into}/{n}", *common])
        assert code == 0, (n, code)
        print(n)
""")


def job_env(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    return agent_env(
        tmp,
        {
            "HF_HUB_OFFLINE": "1",  # no downloads: the models are built from a config
            "HF_HOME": str(tmp / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **extra,
        },
    )


def final_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("final step=")]
    assert len(lines) == 1, text
    return lines[0]


@functools.cache
def uninterrupted(name: str, scratch: str) -> str:
    """The final line of a run with no agent and no interruption (once per session)."""
    job = JOBS[name]
    env = {k: v for k, v in job_env(Path(scratch), {}).items() if not k.startswith("SPOT_AGENT_")}
    env["CHECKPOINT_DIR"] = os.path.join(scratch, "plain")
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / job.script), *job.args],
        capture_output=True,
        text=True,
        env=env,
        cwd=scratch,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return final_line(out.stdout)


@pytest.fixture
def imds() -> Iterator[ImdsMock]:
    with ImdsMock() as mock:
        yield mock


def committed(run: AgentRun) -> int:
    return sum(e.get("event") == "sync.committed" for e in run.events())


@pytest.mark.long
@pytest.mark.parametrize("store", ["local", "seaweedfs"])
@pytest.mark.parametrize("name", sorted(JOBS))
def test_interrupted_twice_resumes_bit_for_bit(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    imds: ImdsMock,
    name: str,
    store: str,
) -> None:
    job = JOBS[name]
    extra = {
        "SPOT_AGENT_IMDS": "on",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
        "SPOT_AGENT_IMDS_INTERVAL": "0.2s",
    }
    if store == "seaweedfs":
        weed = request.getfixturevalue("seaweedfs")
        _, bucket = request.getfixturevalue("s3_bucket")
        extra.update(
            SPOT_AGENT_CHECKPOINT_URI=f"s3://{bucket}/jobs",
            AWS_ENDPOINT_URL_S3=weed.endpoint,
            AWS_ACCESS_KEY_ID=weed.access_key,
            AWS_SECRET_ACCESS_KEY=weed.secret_key,
            AWS_DEFAULT_REGION="us-east-1",
            AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        )  # the metadata service stays on: it is the emulator, and credentials are given
        assert weed.endpoint.startswith("http://127.0.0.1:")
    env = job_env(tmp_path, extra)
    assert imds.url.startswith("http://127.0.0.1:")
    expected = uninterrupted(name, str(tmp_path_factory.getbasetemp()))

    workdir = tmp_path / "work"
    # periodic syncs as often as the agent will: each one freezes the dir wherever the job
    # is, so a save that were not a save point would be caught half-written
    run_args = ["--job-id", name, "--sync-interval", "0.2s", "--checkpoint-dir", str(workdir)]
    command = [sys.executable, str(REPO / "examples" / job.script), *job.args]
    slow = [*command, "--step-delay", "0.3"]

    for how in ("sigterm", "notice"):
        shutil.rmtree(workdir, ignore_errors=True)  # a new machine: all from the store
        run = start_agent(tmp_path, run_args, slow, env, name=how)
        run.wait_for(lambda r=run: "resuming from" in r.job_stdout(), 240, "the job to start")
        saves = workdir / job.subdir
        run.wait_for(lambda d=saves: d.is_dir() and any(d.iterdir()), 120, "a save")
        before = committed(run)
        run.wait_for(lambda r=run, n=before: committed(r) > n, 120, "a commit")
        if how == "sigterm":
            run.signal(signal.SIGTERM)
        else:
            imds.post_interruption("terminate", in_seconds=60)
        assert run.wait(120) == 75, run.stdout[-3000:] + run.stderr[-3000:]
        if how == "notice":
            assert run.event("notice.interruption")["source"] == "imds:spot"
            assert run.event("imds.polling")["endpoint"] == imds.url  # loopback only
        stopped = re.search(r"^stopped at step ([0-9]+)$", run.job_stdout(), re.M)
        assert stopped, run.job_stdout()[-2000:]
        imds.clear()
        newest = check_every_commit(tmp_path / f"restored-{how}", env, job, name)
        assert job.stop_name.format(step=stopped.group(1)) in newest, newest  # the last step

    shutil.rmtree(workdir, ignore_errors=True)
    final = start_agent(tmp_path, run_args, command, env, name="final")
    assert final.wait(300) == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert final_line(final.job_stdout()) == expected
    assert re.search(r"^resuming from .+$", final.job_stdout(), re.M)


def check_every_commit(into: Path, env: dict[str, str], job: Job, name: str) -> list[str]:
    """Restore each committed checkpoint: only whole framework checkpoints, and from the
    first commit that has one, every later commit has one. Returns the newest one's names."""
    out = subprocess.run(
        [sys.executable, "-c", RESTORE_ALL, str(into), "--job-id", name],
        capture_output=True,
        text=True,
        env=env,
        cwd=into.parent,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    sequences = [int(n) for n in out.stdout.split()]
    assert sequences
    names: list[str] = []
    for n in sequences:
        root = into / str(n) / job.subdir
        had, names = names, job.check_whole(root) if root.is_dir() else []
        assert names or not had, f"checkpoint {n} holds no {job.subdir} checkpoint to resume from"
        assert len(names) <= job.most, (n, names)
    assert names
    return names
