"""examples/training.py, interrupted at random moments and retried until it finishes, prints
exactly the final line of an uninterrupted run: model, optimizer and RNG come back from one
save, never from two."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.agentproc import REPO, agent_env, start_agent

EXAMPLE = REPO / "examples" / "training.py"
ARGS = ["--steps", "300", "--save-every", "7"]


def final_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("final step=")]
    assert len(lines) == 1, text
    return lines[0]


def test_training_resumes_exactly_after_interruptions(tmp_path: Path) -> None:
    env = {k: v for k, v in agent_env(tmp_path).items() if not k.startswith("SPOT_AGENT_")}
    env["CHECKPOINT_DIR"] = str(tmp_path / "plain")
    plain = subprocess.run(
        [sys.executable, str(EXAMPLE), *ARGS], capture_output=True, text=True, env=env, timeout=120
    )
    assert plain.returncode == 0, plain.stderr
    expected = final_line(plain.stdout)

    rng = random.Random(11)
    workdir = tmp_path / "work"
    run_args = ["--job-id", "train", "--sync-interval", "1", "--checkpoint-dir", str(workdir)]
    command = [sys.executable, str(EXAMPLE), *ARGS, "--step-delay", "0.005"]
    interrupted = 0
    for attempt in range(12):
        if attempt and rng.random() < 0.5:
            shutil.rmtree(workdir, ignore_errors=True)  # a new machine: all from the store
        run = start_agent(tmp_path, run_args, command, agent_env(tmp_path))
        if attempt < 2:
            run.wait_for(lambda r=run: "resuming at step" in r.job_stdout(), what="the job")
            run.wait_for(lambda r=run: os.path.exists(workdir / "optimizer.json"), what="a save")
            try:
                run.proc.wait(rng.uniform(0.1, 0.8))
            except subprocess.TimeoutExpired:
                run.signal(signal.SIGTERM)
        code = run.wait(120)
        if code == 0:
            assert final_line(run.job_stdout()) == expected
            break
        assert code == 75, run.stdout + run.stderr
        interrupted += 1
    else:
        raise AssertionError("the job never finished")
    assert interrupted >= 1
