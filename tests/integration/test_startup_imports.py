"""What ``spot-agent run`` has imported when it starts the job: nothing that only a later
step, another command or an error path uses.

The agent is run as a container runs it (``python -m agent run``), on a warm restart, with
an audit hook that records ``sys.modules`` when the job is spawned (the audit event
``subprocess.Popen`` of the job's command): no module of the agent is patched. The other
commands keep structlog's console extras out as well.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import servers, stores
from tests.agentproc import REPO, agent_env

#: modules the run must not have loaded when the job starts, and why (import times
#: measured with ``python -X importtime``, on a loaded 2-core machine)
NOT_BEFORE_THE_JOB = {
    "psutil": "20 ms: the job's process tree, walked once the job runs",
    "rich": "60 ms with pygments and attrs: structlog's optional console, unused",
    "pygments": "through rich",
    "boto3": "botocore alone makes the S3 client",
    "s3transfer": "through boto3",
    "requests": "the IMDS client, only when there is a metadata service to poll",
    "agent.batch": "another command, or a continuation after a notice",
    "agent.checkpoints_cli": "another command",
    "agent.doctor": "another command",
    "agent.imds_mock": "another command",
}

#: ``python -m agent`` with a hook that writes the modules loaded when the job is spawned
HARNESS = """
import json, runpy, sys
out, command = sys.argv[1], sys.argv[2:]
def at_spawn(event, args):
    if event == "subprocess.Popen" and list(args[1]) == command and not seen:
        seen.append(sorted(sys.modules))
        with open(out, "w") as f:
            json.dump({"argv": list(args[1]), "modules": seen[0]}, f)
seen = []
sys.addaudithook(at_spawn)
sys.argv = ["spot-agent", "run", "--", *command]
runpy.run_module("agent", run_name="__main__", alter_sys=True)
"""


def modules_at_job_start(env: dict[str, str], tmp_path: Path) -> list[str]:
    """Run the agent twice on one checkpoint dir (the second is a warm restart); the
    modules the second had loaded when it spawned its job."""
    out = tmp_path / "modules.json"
    for _ in range(2):
        out.unlink(missing_ok=True)
        done = subprocess.run(
            [sys.executable, "-c", HARNESS, str(out), "true"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    seen = json.loads(out.read_text())
    assert seen["argv"] == ["true"]
    modules: list[str] = seen["modules"]
    return modules


def loaded_too_early(modules: list[str]) -> dict[str, str]:
    return {
        name: why
        for name, why in NOT_BEFORE_THE_JOB.items()
        if any(m == name or m.startswith(name + ".") for m in modules)
    }


def job_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "state.bin").write_bytes(b"x" * 4096)
    return agent_env(
        tmp_path,
        {
            "SPOT_AGENT_CHECKPOINT_DIR": str(tmp_path / "dir"),
            "SPOT_AGENT_JOB_ID": "imports",
            "SPOT_AGENT_SYNC_INTERVAL": "0",
            **extra,
        },
    )


def test_a_warm_restart_from_a_local_store_starts_its_job_without_later_modules(
    tmp_path: Path,
) -> None:
    modules = modules_at_job_start(job_env(tmp_path), tmp_path)
    assert "agent.run.loop" in modules  # the hook saw the run's own spawn
    assert loaded_too_early(modules) == {}
    assert "botocore" not in modules  # a file:// store needs no SDK


def test_a_warm_restart_from_s3_starts_its_job_without_later_modules(
    tmp_path: Path, s3_env: servers.SeaweedS3, s3_bucket: tuple[str, str]
) -> None:
    endpoint, bucket = s3_bucket
    env = job_env(
        tmp_path,
        SPOT_AGENT_CHECKPOINT_URI=f"s3://{bucket}/imports",
        AWS_ENDPOINT_URL_S3=stores.loopback(endpoint),
    )
    modules = modules_at_job_start(env, tmp_path)
    assert "botocore.client" in modules  # the hook saw an S3 run's spawn
    assert loaded_too_early(modules) == {}


def test_the_check_sees_what_it_checks(tmp_path: Path) -> None:
    """Where rich is installed, a structlog imported the usual way loads it: the hidden
    import in ``agent.logs`` is what keeps it out above."""
    if importlib.util.find_spec("rich") is None:
        pytest.skip("rich is not installed here: nothing for structlog to load")
    out = subprocess.run(
        [sys.executable, "-c", "import json, sys, structlog; print(json.dumps(list(sys.modules)))"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "rich" in loaded_too_early(json.loads(out.stdout))


#: ``python -m agent ARGS...``, then the modules it loaded, as JSON on the last line
COMMAND_MODULES = """
import json, runpy, sys
sys.argv = ["spot-agent", *sys.argv[1:]]
try:
    runpy.run_module("agent", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_other_commands_import_structlog_without_its_console_extras(tmp_path: Path) -> None:
    """``checkpoints`` imports the engine, which imports structlog: agent.logs comes first,
    so rich stays out there too (60 ms of every restore's start where rich is installed)."""
    if importlib.util.find_spec("rich") is None:
        pytest.skip("rich is not installed here: nothing for structlog to load")
    env = job_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", COMMAND_MODULES, "checkpoints", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "the store holds no jobs at all" in done.stderr  # it ran: an empty store
    assert "structlog" in seen["modules"] and "checkpoint.engine.format.jobstore" in seen["modules"]
    assert "rich" not in loaded_too_early(seen["modules"])
