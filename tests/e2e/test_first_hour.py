"""The first hour's traps (issue 24), each through the real entrypoint: ``python -m agent``."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.agentproc import AGENT, agent_env, cli, run_agent, start_agent

# One checkpoint per run: a counter that changes every time.
COUNTER = textwrap.dedent("""
    import checkpoint
    checkpoint.save_json("n.json", checkpoint.load_json("n.json", default=0) + 1)
""")


def commits(tmp: Path, job_id: str, count: int) -> None:
    for _ in range(count):
        r = run_agent(tmp, ["--job-id", job_id], [sys.executable, "-c", COUNTER])
        assert r.proc.returncode == 0, r.stdout + r.stderr


def test_a_stray_word_before_the_separator_is_refused_in_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = run_agent(tmp_path, ["--sync-interval", "5", "minutes"], ["touch", str(marker)], timeout=60)
    assert r.proc.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("spot-agent: error: run: unexpected argument before --: minutes")
    assert r.stdout == "" and not marker.exists()  # refused before anything started
    # The same options with the value in one word run the job.
    ok = run_agent(tmp_path, ["--sync-interval", "5m"], ["touch", str(marker)], timeout=60)
    assert ok.proc.returncode == 0, ok.stderr
    assert marker.exists()


def _into_closed_pipe(tmp: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with stdout a pipe whose reader has already gone (``| head`` after it
    read what it wanted): every write meets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [*AGENT, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=agent_env(tmp),
            cwd=tmp,
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def piped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with three checkpoints of job ``piped``, shared by the pipe tests (read only)."""
    tmp = tmp_path_factory.mktemp("piped")
    commits(tmp, "piped", 3)
    return tmp


@pytest.mark.parametrize(
    "args",
    [
        ("checkpoints", "list", "--job-id", "piped"),
        ("checkpoints", "list", "--job-id", "piped", "--json"),
        ("checkpoints", "show", "--job-id", "piped", "--json"),
        ("checkpoints", "show", "--job-id", "piped"),
    ],
)
def test_a_closed_pipe_ends_the_command_quietly_with_141(
    piped: Path, args: tuple[str, ...]
) -> None:
    r = _into_closed_pipe(piped, *args)
    assert r.stderr == b"", r.stderr.decode()  # no BrokenPipeError, no "Exception ignored"
    assert r.returncode == 128 + 13  # as `ls | head` reports a reader that left: SIGPIPE


def test_head_takes_the_first_line_and_the_pipeline_is_quiet(piped: Path) -> None:
    """The user's own pipeline, through a shell: ``list | head -1``."""
    agent = shlex.join(AGENT)
    r = subprocess.run(
        ["sh", "-c", f"{agent} checkpoints list --job-id piped | head -1"],
        capture_output=True,
        text=True,
        env=agent_env(piped),
        cwd=piped,
        timeout=60,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(r.stdout.splitlines()) == 1


def test_a_command_that_does_not_exist_is_said_on_stderr(tmp_path: Path) -> None:
    r = run_agent(tmp_path, ["--job-id", "nf"], ["no-such-command-spot-agent"])
    assert r.proc.returncode == 127
    assert r.stderr.strip().splitlines() == [
        "spot-agent: error: no-such-command-spot-agent: command not found"
    ]
    assert r.event("child.spawn_failed")["exit_code"] == 127  # the JSON event stays on stdout
    assert not any(line.startswith("{") for line in r.stderr.splitlines())


def test_an_unusable_store_is_said_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    uri = (tmp_path / "a-file" / "store").as_uri()  # under a file: no store can be made
    env = agent_env(tmp_path, {"SPOT_AGENT_CHECKPOINT_URI": uri})
    r = run_agent(tmp_path, ["--job-id", "down"], ["true"], env=env)
    assert r.proc.returncode == 69
    assert r.stderr.strip().splitlines() == [
        f"spot-agent: error: checkpoint store {uri}: cannot create "
        f"{tmp_path / 'a-file' / 'store'}: Not a directory"
    ]
    assert r.event("store.unavailable")["store"] == uri  # and the JSON event on stdout


def test_run_help_lists_every_variable_the_job_sees(tmp_path: Path) -> None:
    dump = tmp_path / "env.json"
    job = (
        "import json, os, sys; json.dump(sorted(k for k in os.environ if "
        "k.startswith('SPOT_AGENT_') or k == 'CHECKPOINT_DIR'), open(sys.argv[1], 'w'))"
    )
    r = run_agent(tmp_path, ["--job-id", "env"], [sys.executable, "-c", job, str(dump)])
    assert r.proc.returncode == 0, r.stderr
    seen = json.loads(dump.read_text())
    assert "SPOT_AGENT_LOCK_FILE" in seen and "SPOT_AGENT_STOP_SIGNAL" in seen
    help_text = cli(tmp_path, "run", "--help").stdout
    section = help_text.split("what the job sees in its environment:")[1].split("\n\n")[0]
    named = set(re.findall(r"\b(CHECKPOINT_DIR|SPOT_AGENT_[A-Z_]+)\b", section))
    assert set(seen) - {"SPOT_AGENT_CHECKPOINT_URI", "SPOT_AGENT_IMDS"} <= named, set(seen) - named


def test_imds_mock_help_documents_action_and_host_default(tmp_path: Path) -> None:
    text = " ".join(cli(tmp_path, "imds-mock", "--help").stdout.split())
    action = text.split("--action {terminate,stop,hibernate} ")[-1]
    assert action.startswith("what the --notice-after notice announces (default terminate)")
    assert "--host HOST address to listen on (default 127.0.0.1;" in text


def test_imds_mock_warns_about_an_address_other_than_loopback(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the warning comes before the bind,
    # which then fails, so nothing ever listens beyond loopback.
    r = cli(tmp_path, "imds-mock", "--host", "192.0.2.1", "--port", "0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("imds-mock: warning: listening on 192.0.2.1: "), r.stderr
    assert "no authentication" in lines[0]
    assert lines[1].startswith("imds-mock: cannot listen on 192.0.2.1:0")


def test_imds_mock_on_loopback_says_no_warning(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*AGENT, "imds-mock", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=agent_env(tmp_path),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("imds-mock: EC2 metadata on http://127.0.0.1:")
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == ""


def test_a_derived_job_id_is_announced_with_how_to_keep_one(tmp_path: Path) -> None:
    r = run_agent(tmp_path, [], ["true"])
    assert r.proc.returncode == 0
    job_id = r.event("agent.start")["job_id"]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"spot-agent: warning: job id {job_id} is derived from the command")
    assert "--job-id" in line and "SPOT_AGENT_JOB_ID" in line and "starts over" in line
    named = run_agent(tmp_path, ["--job-id", "chosen"], ["true"])
    assert named.proc.returncode == 0 and named.stderr == ""


def test_a_final_sync_with_nothing_new_names_the_checkpoint_it_stands_on(
    tmp_path: Path,
) -> None:
    commits(tmp_path, "same", 1)
    # The job changes nothing, then the agent is interrupted (SIGTERM from the job itself).
    job = 'kill -TERM "$SPOT_AGENT_PID"; sleep 30'
    r = run_agent(tmp_path, ["--job-id", "same"], ["sh", "-c", job])
    assert r.proc.returncode == 75, r.stdout + r.stderr
    unchanged = r.event("sync.unchanged")
    assert unchanged["sequence"] == 1 and unchanged["nothing_new"] is True
    final = r.event("shutdown.final_checkpoint")
    assert final["sequence"] == 1 and final["nothing_new"] is True
    ended = r.event("agent.exit")
    assert (ended["committed"], ended["nothing_new"], ended["restorable"]) == (1, True, 1)
    assert not [e for e in r.events() if e.get("event") == "sync.committed"]


def test_a_final_sync_that_commits_says_something_new(tmp_path: Path) -> None:
    job = COUNTER + textwrap.dedent("""
        import os, signal, time
        os.kill(int(os.environ["SPOT_AGENT_PID"]), signal.SIGTERM)
        time.sleep(30)
    """)
    r = run_agent(tmp_path, ["--job-id", "fresh"], [sys.executable, "-c", job])
    assert r.proc.returncode == 75, r.stdout + r.stderr
    ended = r.event("agent.exit")
    assert (ended["committed"], ended["nothing_new"]) == (1, False)


def test_a_pruned_checkpoint_is_named_as_pruned(tmp_path: Path) -> None:
    commits(tmp_path, "pruned", 3)
    gc = cli(tmp_path, "checkpoints", "gc", "--job-id", "pruned", "--keep", "1")
    assert gc.returncode == 0, gc.stderr
    to = tmp_path / "to"
    for args in (("restore", "1", "--to", str(to)), ("show", "2")):
        r = cli(tmp_path, "checkpoints", *args, "--job-id", "pruned")
        assert r.returncode == 1, r.stdout + r.stderr
        assert r.stderr.strip().splitlines() == [
            f"spot-agent: checkpoint {args[1]} of job pruned was pruned (it has 3)"
        ]
    assert not to.exists() or not any(to.iterdir())  # nothing restored
    never = cli(tmp_path, "checkpoints", "restore", "9", "--to", str(to), "--job-id", "pruned")
    assert never.returncode == 1
    assert never.stderr.strip() == "spot-agent: job pruned has no checkpoint 9 (it has 3)"


def _readme_layout() -> list[tuple[str, re.Pattern[str]]]:
    """The README's store layout, each line as (line, a pattern for the keys it names)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("Layout under the store's root")[1].split("```")[1]
    layout = []
    for line in block.strip().splitlines():
        where = line.split()[0]
        assert where.startswith("<prefix>/<job-id>/"), line
        digits = dict(re.findall(r"(<seq>|<n>): (\d+) digits", line))
        pattern = re.escape(where.removeprefix("<prefix>/<job-id>/"))
        for name, rx in (
            ("<h[:2]>", "[0-9a-f]{2}"),
            ("<h>", "[0-9a-f]{64}"),
            ("<name>", "(?:blake3-)?[0-9a-f]{64}"),
            ("<seq>", r"\d{" + digits.get("<seq>", "1,") + "}"),
            ("<n>", r"\d{" + digits.get("<n>", "1,") + "}"),
            ("<time>", r"\d{8}T\d{6}"),
            ("<id>", "[0-9a-f]{12}"),
        ):
            pattern = pattern.replace(re.escape(name), rx)
        layout.append((line, re.compile(pattern + r"\Z")))
    return layout


def test_the_readme_store_layout_is_the_stores(tmp_path: Path) -> None:
    """Every key a run writes is one the README names, and every line names some.

    Some keys exist only for a while: a running attempt's lease (deleted at exit) and the
    mark of a gc forced past that lease. So the third attempt runs until the test has seen
    its lease and forced a gc; the second writes enough files for a paged manifest."""
    job = textwrap.dedent("""
        import checkpoint, os, sys, time
        checkpoint.save_bytes("small.bin", os.urandom(10_000))      # packed
        checkpoint.save_bytes("large.bin", os.urandom(3_000_000))   # its own blob(s)
        if sys.argv[1:] == ["many"]:  # more entries than one manifest object holds
            with checkpoint.saving():
                for i in range(2_100):
                    checkpoint.save_bytes(f"many/{i}", b"x")
        while sys.argv[1:] == ["wait"] and not os.path.exists("go"):
            time.sleep(0.1)
    """)
    for arg in ("few", "many"):  # two attempts, two checkpoints
        r = run_agent(tmp_path, ["--job-id", "layout"], [sys.executable, "-c", job, arg])
        assert r.proc.returncode == 0, r.stderr
    root = tmp_path / "store" / "layout"

    def keys() -> set[str]:
        # a name with a leading dot is the local store's write under way, not a key yet
        files = (p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        return {p.relative_to(root).as_posix() for p in files}

    seen = keys()
    live = start_agent(tmp_path, ["--job-id", "layout"], [sys.executable, "-c", job, "wait"])
    live.wait_for(lambda: any(k.startswith("leases/") for k in keys()), what="its lease")
    seen |= keys()
    forced = cli(tmp_path, "checkpoints", "gc", "--job-id", "layout", "--force")
    assert forced.returncode == 0, forced.stderr
    (tmp_path / "go").touch()
    assert live.wait(120) == 0, live.stderr
    seen |= keys()
    layout = _readme_layout()
    for key in sorted(seen):
        assert any(rx.match(key) for _line, rx in layout), f"{key} is not in the README"
    for line, rx in layout:
        assert any(rx.match(key) for key in seen), f"no key like: {line}"
