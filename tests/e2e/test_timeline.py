"""``checkpoints timeline`` after a real job interrupted three times, then finished.

The job saves its state every SAVE_EVERY seconds and logs the time of each save; on the
stop signal it exits without saving, so the work since its last save is lost. The
timeline, read from the store alone, must report the attempts, the notices' sources and
the work lost as the job's own save times give it, and totals that add up. Its SVG is
rendered by headless Chromium and its bars checked against the JSON.
"""

from __future__ import annotations

import itertools
import json
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.imds_mock import ImdsMock
from agent.timeline.model import parse_time, seconds_between
from tests.agentproc import AgentRun, agent_env, cli, start_agent
from tests.stores import kind_of, store_agent_env
from tests.svgcheck import bar_geometry, find_chromium

PY = sys.executable
SAVE_EVERY = 2.5
#: how long after a save the test interrupts: the work the timeline must call lost
AFTER_SAVE = 1.5

JOB = textwrap.dedent(f"""
    import checkpoint, os, signal, sys, time
    state = checkpoint.load_json("state.json", {{"n": 0}})
    n = state["n"]
    print(f"restored n={{n}}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop: no save, work is lost
    finish = int(os.environ.get("FINISH_AFTER", "0"))
    saves = 0
    while True:
        time.sleep({SAVE_EVERY})
        n += 1
        checkpoint.save_json("state.json", {{"n": n}})
        with open(os.environ["SAVE_LOG"], "a") as log:
            log.write(f"{{n}} {{time.time()}}\\n")
        saves += 1
        print(f"saved n={{n}}", flush=True)
        if finish and saves >= finish:
            sys.exit(0)
""")


@pytest.fixture
def imds() -> Iterator[ImdsMock]:
    with ImdsMock() as mock:
        yield mock


def save_times(log: Path) -> dict[int, float]:
    return {int(n): float(t) for n, t in (line.split() for line in log.read_text().splitlines())}


def restored_n(run: AgentRun) -> int:
    line = next(x for x in run.job_stdout().splitlines() if x.startswith("restored n="))
    return int(line.removeprefix("restored n="))


def interrupted_attempt(
    tmp: Path, env: dict[str, str], imds: ImdsMock, how: str
) -> tuple[AgentRun, float]:
    """Run an attempt until it has committed a save of its own, interrupt it AFTER_SAVE
    seconds after its next save; returns the run and when the notice was sent."""
    run = start_agent(tmp, ["--job-id", "tl", "--sync-interval", "1s"], [PY, "-c", JOB], env=env)
    run.wait_for(lambda: run.job_stdout().count("saved n=") >= 2, timeout=60, what="two saves")
    time.sleep(AFTER_SAVE)
    sent = time.time()
    if how == "sigterm":
        run.signal(signal.SIGTERM)
    else:
        imds.post_interruption("terminate", in_seconds=30)
    assert run.wait(60) == 75, run.stdout + run.stderr
    names = [e["event"] for e in run.events()]
    assert names.index("interruption.cost") < names.index("agent.exit")
    imds.clear()
    return run, sent


def run_four_attempts(tmp: Path, env: dict[str, str], imds: ImdsMock) -> dict[str, Any]:
    env = {
        **env,
        "SAVE_LOG": str(tmp / "saves.log"),
        "SPOT_AGENT_IMDS": "on",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
        "SPOT_AGENT_IMDS_INTERVAL": "0.2s",
    }
    sources = ("sigterm", "imds", "sigterm")
    runs = [interrupted_attempt(tmp, env, imds, how) for how in sources]
    last = start_agent(
        tmp, ["--job-id", "tl", "--sync-interval", "1s"], [PY, "-c", JOB],
        env={**env, "FINISH_AFTER": "2"},
    )  # fmt: skip
    assert last.wait(60) == 0, last.stdout + last.stderr
    svg = tmp / "timeline.svg"
    out = cli(
        tmp, "checkpoints", "timeline", "--job-id", "tl", "--json", "--svg", str(svg), env=env
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    table = cli(tmp, "checkpoints", "timeline", "--job-id", "tl", env=env)
    assert table.returncode == 0, table.stderr
    assert "3 interruptions" in table.stdout and "imds:spot" in table.stdout
    times = save_times(tmp / "saves.log")
    nexts = [restored_n(r) for r, _ in runs[1:]] + [restored_n(last)]
    for i, ((run, sent), committed_n) in enumerate(zip(runs, nexts, strict=True)):
        a = doc["attempts"][i]
        # the work lost, by the job's own clock: from the save the next attempt resumed
        # from to the notice
        assert a["work_lost_seconds"] == pytest.approx(sent - times[committed_n], abs=1.0)
        assert a["work_lost_seconds"] >= AFTER_SAVE - 1.0
        received = parse_time(a["notice"]["received"])
        assert received is not None and received.timestamp() == pytest.approx(sent, abs=1.0)
        cost = run.event("interruption.cost")  # the EMF metric's event says the same
        assert cost["work_lost_seconds"] == pytest.approx(a["work_lost_seconds"], abs=0.01)
        assert cost["notice_to_committed_seconds"] == a["notice"]["notice_to_committed_seconds"]
    return {"doc": doc, "svg": svg}


def check_timeline(doc: dict[str, Any]) -> None:
    attempts, totals = doc["attempts"], doc["totals"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    assert [a["end"] for a in attempts] == ["interrupted"] * 3 + ["exited"]
    assert [a["exit_code"] for a in attempts] == [75, 75, 75, 0]
    assert [a["notice"]["source"] for a in attempts[:3]] == ["sigterm", "imds:spot", "sigterm"]
    assert attempts[3]["notice"] is None and attempts[3]["work_lost_seconds"] is None
    # what the emulator served when each attempt read its identity: an on-demand instance
    # until a spot notice was rehearsed (during attempt 2), a spot one from then on
    lifecycles = [a["instance"]["lifecycle"] for a in attempts]
    assert lifecycles == ["on-demand", "on-demand", "spot", "spot"]
    for a in attempts:
        assert a["started"] < a["ended"]
        assert a["instance"]["instance_id"].startswith("i-")
        assert a["syncs"]["commits"] >= 1 and a["syncs"]["bytes_uploaded"] > 0
        parts = ("restore_seconds", "job_seconds", "final_sync_seconds", "other_seconds")
        assert sum(a[p] for p in parts) == pytest.approx(a["seconds"], abs=0.01)
    for a in attempts[:3]:
        assert 0 <= a["notice"]["notice_to_committed_seconds"] < 30
    assert attempts[0]["restore"]["sequence"] is None  # a fresh start
    for before, a in itertools.pairwise(attempts):
        assert a["restore"]["sequence"] == before["last_commit"]["sequence"]
    assert totals["attempts"] == 4 and totals["interruptions"] == 3
    lost = sum(a["work_lost_seconds"] or 0 for a in attempts)
    assert totals["work_lost_seconds"] == pytest.approx(lost, abs=0.01)
    spent = sum(a["seconds"] for a in attempts)
    assert totals["attempt_seconds"] == pytest.approx(spent, abs=0.01)
    assert totals["wall_seconds"] == pytest.approx(
        spent + totals["between_attempts_seconds"], abs=0.01
    )
    job = sum(a["job_seconds"] for a in attempts)
    assert totals["useful_seconds"] == pytest.approx(job - lost, abs=0.01)
    assert totals["useful_share"] == pytest.approx(
        totals["useful_seconds"] / totals["wall_seconds"], abs=0.001
    )
    assert 0 < totals["useful_share"] < 1


@pytest.mark.long
def test_timeline_of_a_job_interrupted_three_times(
    tmp_path: Path, store_url: str, imds: ImdsMock
) -> None:
    env = store_agent_env(tmp_path, store_url)
    env.pop("AWS_EC2_METADATA_DISABLED", None)  # the metadata service is the emulator
    got = run_four_attempts(tmp_path, env, imds)
    check_timeline(got["doc"])
    if kind_of(store_url) == "local":  # the picture is drawn from the JSON, whatever the store
        chromium = find_chromium()
        bars = bar_geometry(chromium, got["svg"], tmp_path / "chromium")
        check_bars(bars, got["doc"])


def check_bars(bars: dict[str, list[dict[str, Any]]], doc: dict[str, Any]) -> None:
    """The bars' rendered boxes are where the JSON's times put them: one per attempt, in
    order, widths proportional to the attempts' lengths, gaps to the times between them."""
    attempts = doc["attempts"]
    drawn = bars["attempt"]
    assert [b["attempt"] for b in drawn] == [str(a["attempt"]) for a in attempts]
    assert [b["end"] for b in drawn] == [a["end"] for a in attempts]
    first = attempts[0]
    px = drawn[0]["width"] / first["seconds"]  # pixels per second, from the first bar
    assert px > 0

    def at(iso: str) -> float:
        return drawn[0]["x"] + (seconds_between(first["started"], iso) or 0.0) * px

    for a, box in zip(attempts, drawn, strict=True):
        assert box["x"] == pytest.approx(at(a["started"]), abs=1.5)
        assert box["width"] == pytest.approx(a["seconds"] * px, abs=1.5)
        assert box["y"] > 0 and box["height"] > 0
    ys = [b["y"] for b in drawn]
    assert ys == sorted(ys) and len(set(ys)) == len(ys)  # one row each, top to bottom
    notices = bars["notice"]
    assert len(notices) == 3
    for a, line in zip(attempts[:3], notices, strict=True):
        assert line["x"] == pytest.approx(at(a["notice"]["received"]), abs=1.5)
    lost = bars["lost"]
    assert len(lost) == 3
    for a, box in zip(attempts[:3], lost, strict=True):
        assert box["width"] == pytest.approx(a["work_lost_seconds"] * px, abs=1.5)
        assert box["x"] + box["width"] == pytest.approx(at(a["notice"]["received"]), abs=1.5)
    # a deadline is drawn where the axis reaches it (else it is given as text)
    axis_end = max(at(a["last_heard"]) for a in attempts) + 1.5
    deadlines = [at(a["notice"]["deadline"]) for a in attempts[:3]]
    drawn_deadlines = [line["x"] for line in bars["deadline"]]
    assert drawn_deadlines == pytest.approx([x for x in deadlines if x <= axis_end], abs=1.5)
    assert len(bars["restore"]) == 4
    assert len(bars["final-sync"]) == 4


SYNCING_JOB = textwrap.dedent("""
    import checkpoint, os, signal, time
    n = checkpoint.load_json("n.json", 0)
    print(f"restored n={n}", flush=True)
    for _ in range(int(os.environ.get("STEPS", "1000"))):
        n += 1
        checkpoint.save_json("n.json", n)
        checkpoint.request_sync()
        print(f"saved n={n}", flush=True)
        time.sleep(0.3)
""")


def committed(run: AgentRun) -> list[dict[str, Any]]:
    return [e for e in run.events() if e["event"] == "sync.committed"]


def test_an_agent_killed_with_sigkill_still_shows_its_syncs(tmp_path: Path) -> None:
    env = agent_env(tmp_path)
    first = start_agent(tmp_path, ["--job-id", "k9"], [PY, "-c", SYNCING_JOB], env=env)
    first.wait_for(lambda: first.job_stdout().count("saved n=") >= 3, what="three saves")
    first.wait_for(lambda: len(committed(first)) >= 2, what="two commits")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    commits = len(committed(first))
    newest = committed(first)[-1]["sequence"]

    def timeline() -> dict[str, Any]:
        out = cli(tmp_path, "checkpoints", "timeline", "--job-id=k9", "--json", env=env)
        assert out.returncode == 0, out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    (alone,) = timeline()["attempts"]
    assert alone["end"] == "running" and alone["ended"] is None  # nothing says otherwise
    # the record was rewritten after each commit: all but perhaps the very last are there
    # (and the kill may have cut off the log line of a commit the record has)
    assert commits - 1 <= alone["syncs"]["commits"] <= commits + 1
    second = start_agent(tmp_path, ["--job-id", "k9"], [PY, "-c", SYNCING_JOB],
                         env={**env, "STEPS": "1"})  # fmt: skip
    assert second.wait(60) == 0, second.stdout + second.stderr
    doc = timeline()
    cut, done = doc["attempts"]
    assert cut["end"] == "cut_short" and done["end"] == "exited" and done["exit_code"] == 0
    assert cut["work_lost_seconds"] is not None and cut["work_lost_seconds"] >= 0
    # the retry resumed from the newest commit: the last one logged, or one more whose log
    # line the kill cut off; the record may lag it by the one commit it had no time to
    # write after (as above)
    restored = done["restore"]["sequence"]
    assert restored in (newest, newest + 1)
    assert cut["last_commit"]["sequence"] in (restored - 1, restored)
    assert doc["totals"]["cut_short"] == 1 and doc["totals"]["interruptions"] == 0


def test_an_unknown_job_names_the_nearest(tmp_path: Path) -> None:
    env = agent_env(tmp_path)
    run = start_agent(tmp_path, ["--job-id", "resnet-50"], [PY, "-c", "print(1)"], env=env)
    assert run.wait(60) == 0
    out = cli(tmp_path, "checkpoints", "timeline", "--job-id=resnet-05", env=env)
    assert out.returncode == 1
    assert out.stderr.strip().endswith("nearest: resnet-50"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    unwritable = tmp_path / "no-such-dir" / "t.svg"
    bad = cli(tmp_path, "checkpoints", "timeline", "--job-id=resnet-50", f"--svg={unwritable}",
              env=env)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        f"spot-agent: error: --svg: cannot write {unwritable}: No such file or directory"
    )
