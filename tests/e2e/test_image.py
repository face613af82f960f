"""The container image, built for real and stopped as a platform stops it.

The repository's Dockerfile is built with podman (its pinned ``FROM`` replaced by a local
Debian 12 made like the official python image, see tests/containers.py) and run as a
container would be: its filesystem, its own PID namespace, its USER, WORKDIR, ENV and
ENTRYPOINT. Then the story a user deploys: the agent is PID 1 and the job its child;
``docker stop -t 10`` (SIGTERM to PID 1, SIGKILL 10 s later) commits the final checkpoint
and the container exits 75; a fresh container resumes from it; orphans are reaped. The
store is SeaweedFS on 127.0.0.1 (no network namespace: the container shares the host's
loopback), so it outlives each container as a bucket does.

Cached under ~/.cache/spot-agent-tests: the first run takes a minute or two (debootstrap,
pip), later runs reuse the exported image until the Dockerfile or the sources change.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import containers, servers
from tests.containers import Container, Image
from tests.static.test_api_old_python import SCRIPT as API_ON_OLD_PYTHON

pytestmark = pytest.mark.long


def need_tools() -> None:
    """Skip where podman/debootstrap are missing, except under CI (`.ci/run` installs them)."""
    why = containers.missing_tools()
    if why is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must build the image: {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def base_image() -> Image:
    need_tools()
    return containers.build_image(
        "base", containers.REPO / "Dockerfile", containers.REPO, containers.BOOKWORM_PYTHON
    )


#: the job: a step counter saved at each step; it stops politely on the stop signal. At
#: start it reports who it is, and orphans a process for PID 1 to adopt and reap.
STORY_JOB = textwrap.dedent("""
    import os, subprocess, sys, time
    import checkpoint

    state = checkpoint.load_json("state.json", default={"step": 0, "runs": 0})
    state["runs"] += 1
    print(f"job uid={os.getuid()} pid={os.getpid()} ppid={os.getppid()}"
          f" cwd={os.getcwd()} api={checkpoint.__file__}"
          f" restored={os.environ.get('SPOT_AGENT_RESTORED')} resumed_at={state['step']}"
          f" run={state['runs']}", flush=True)

    # an orphan: the shell exits at once, leaving its background sleep to PID 1
    orphan = int(subprocess.run(["sh", "-c", "sleep 1 >/dev/null 2>&1 & echo $!"],
                                capture_output=True, text=True, check=True).stdout)
    def state_of(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return fields[0], int(fields[1])  # state, ppid
        except FileNotFoundError:
            return None
    print(f"orphan {orphan} adopted by {state_of(orphan)[1]}", flush=True)
    deadline = time.monotonic() + 60
    while state_of(orphan) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"orphan {orphan} reaped" if state_of(orphan) is None
          else f"orphan {orphan} left as {state_of(orphan)}", flush=True)

    if state["runs"] >= 2:
        checkpoint.save_json("state.json", state)
        print("resumed; done", flush=True)
        sys.exit(0)
    while not checkpoint.interrupted():
        state["step"] += 1
        checkpoint.save_json("state.json", state)
        if state["step"] == 5:
            print("working", flush=True)
        time.sleep(0.1)
    print(f"stopping at step {state['step']}", flush=True)
""").encode()


@pytest.fixture
def store_env(s3_bucket: tuple[str, str], tmp_path: Path) -> dict[str, str]:
    """The container's settings: the bucket on SeaweedFS at 127.0.0.1, no metadata service."""
    endpoint, bucket = s3_bucket
    assert endpoint.startswith("http://127.0.0.1:"), endpoint
    return {
        "SPOT_AGENT_CHECKPOINT_URI": f"s3://{bucket}/ckpt",
        "SPOT_AGENT_JOB_ID": "story",
        "SPOT_AGENT_GRACE_PERIOD": "10s",  # docker stop -t 10
        "SPOT_AGENT_SYNC_INTERVAL": "0",
        "SPOT_AGENT_IMDS": "off",
        "AWS_ENDPOINT_URL": endpoint,  # every service of the SDK, not only S3: loopback
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": servers.ADMIN_KEY,
        "AWS_SECRET_ACCESS_KEY": servers.ADMIN_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }


@pytest.fixture
def started() -> Iterator[list[Container]]:
    """Containers a test starts; whatever is still running at its end is killed."""
    running: list[Container] = []
    yield running
    for container in running:
        container.close()


def run_story(
    image: Image,
    tmp_path: Path,
    env: dict[str, str],
    started: list[Container],
    command: list[str],
    files: dict[str, bytes],
) -> None:
    """docker run; docker stop -t 10 (exit 75); docker run again in a fresh container."""
    first = Container(image, tmp_path / "first", command, env, files=files)
    started.append(first)
    first.wait_for_line("working")
    start = first.events("agent.start")[0]
    assert start["pid"] == 1, start  # the agent is the container's init
    assert "ppid=1 " in first.stdout, first.stdout  # and the job its child
    orphan_line = next(ln for ln in first.stdout.splitlines() if ln.startswith("orphan "))
    assert orphan_line.endswith("adopted by 1"), first.stdout
    first.wait_for_line(" reaped")  # PID 1 reaped it: no zombie left behind

    assert first.stop(10) == 75, first.stdout + first.stderr
    final = first.events("agent.exit")[-1]
    assert final["committed"] is not None, final
    stopped_at = int(first.stdout.split("stopping at step ")[1].split()[0])

    second = Container(image, tmp_path / "second", command, env, files=files)
    started.append(second)
    assert second.wait(120) == 0, second.stdout + second.stderr
    assert f"resumed_at={stopped_at} run=2" in second.stdout, second.stdout
    assert second.events("restore.done"), second.stdout
    assert "orphan" in second.stdout and " reaped" in second.stdout, second.stdout


def test_base_image_docker_stop_commits_and_a_fresh_container_resumes(
    base_image: Image, tmp_path: Path, store_env: dict[str, str], started: list[Container]
) -> None:
    assert base_image.entrypoint == ["/entrypoint.sh"] and base_image.user == "10001:10001"
    files = {"/opt/job/story.py": STORY_JOB}
    run_story(base_image, tmp_path, store_env, started, ["python3", "/opt/job/story.py"], files)
    out = (tmp_path / "first" / "stdout").read_text()
    assert "job uid=10001 " in out and " cwd=/home/spot " in out, out  # USER and WORKDIR


def docs_dockerfile(containing: str) -> str:
    """The Dockerfile block of docs/container.md that contains ``containing``, as printed."""
    text = (containers.REPO / "docs" / "container.md").read_text()
    found = [b for b in re.findall(r"```dockerfile\n(.*?)```", text, re.S) if containing in b]
    assert len(found) == 1, f"{len(found)} dockerfile blocks with {containing!r}"
    return found[0]


@pytest.fixture(scope="session")
def any_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """docs/container.md's recipe for a job image whose Python is 3.11+, built on a
    Debian 12 with python3 and python3-venv only (its system Python externally managed)."""
    need_tools()
    context = tmp_path_factory.mktemp("any-image")
    (context / "Dockerfile").write_text(docs_dockerfile("python3 -m venv /opt/spot-agent"))
    (context / "train.py").write_bytes(STORY_JOB)
    return containers.build_image(
        "any-image",
        context / "Dockerfile",
        context,
        containers.BOOKWORM_DISTRO,
        {"spot-agent-src": containers.REPO},
    )


def test_any_image_recipe_docker_stop_commits_and_a_fresh_container_resumes(
    any_image: Image, tmp_path: Path, store_env: dict[str, str], started: list[Container]
) -> None:
    assert any_image.entrypoint[:3] == ["/opt/spot-agent/bin/python", "-I", "-m"]
    assert any_image.cmd == ["python3", "/opt/job/train.py"]
    run_story(any_image, tmp_path, store_env, started, [], {})
    out = (tmp_path / "first" / "stdout").read_text()
    # the job ran on the image's own Python, with the job API copied beside the agent
    assert " api=/opt/spot-agent/job-api/checkpoint/__init__.py " in out, out


@pytest.fixture(scope="session")
def old_python_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """A Debian 11 image (Python 3.9, nothing else) given the job API as the recipe for
    older Pythons gives it: ``spot-agent job-api-path``'s directory, on ``PYTHONPATH``."""
    need_tools()
    from agent.job_api import install_job_api

    context = tmp_path_factory.mktemp("old-python")
    install_job_api(context / "job-api")
    (context / "Dockerfile").write_text(
        "FROM debian:bullseye\n"
        "COPY job-api /opt/spot-agent/job-api\n"
        "ENV PYTHONPATH=/opt/spot-agent/job-api\n"
    )
    return containers.build_image(
        "old-python", context / "Dockerfile", context, containers.BULLSEYE_DISTRO
    )


def test_the_job_api_in_an_image_whose_python_is_3_9(
    old_python_image: Image, tmp_path: Path, started: list[Container]
) -> None:
    """Debian 11's own python3 (3.9) imports the job API and uses it, loading nothing but
    the standard library (the script of tests/static/test_api_old_python.py)."""
    env = {"CHECKPOINT_DIR": "/tmp/ck", "PYTHONNOUSERSITE": "1"}
    job = Container(old_python_image, tmp_path / "c", ["python3", "-c", API_ON_OLD_PYTHON], env)
    started.append(job)
    assert job.wait(120) == 0, job.stderr
    assert job.stdout.strip() == "ok (3, 9)", job.stdout
    assert (tmp_path / "c" / "upper" / "tmp" / "ck" / "notes.txt").read_text() == "ok"
