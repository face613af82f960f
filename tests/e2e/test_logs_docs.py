"""Docs that run: every field the Logs Insights queries in docs/operators.md use is
emitted by a real run (an interrupted attempt, its resumption, and an interruption whose
final checkpoint fails), so no query reads a field that no longer exists."""

from __future__ import annotations

import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.agentproc import REPO, run_agent, start_agent

OPERATORS = REPO / "docs" / "operators.md"
#: words of the query language, not fields
_KEYWORDS = frozenset(
    {"fields", "filter", "stats", "sort", "limit", "by", "as", "and", "or", "not", "in"}
    | {"asc", "desc", "like", "display", "parse", "dedup", "unmask"}
)
_JOB = textwrap.dedent("""
    import os, pathlib, time
    import checkpoint
    state = pathlib.Path(os.environ["CHECKPOINT_DIR"]) / "state"
    state.write_text(os.environ["SPOT_AGENT_ATTEMPT"])
    os.kill(int(os.environ["SPOT_AGENT_PID"]), 10)  # a requested sync: sync.committed
    print("ready", flush=True)
    if os.environ.get("RUN_FOREVER"):
        while True:  # keeps saving whole states: the final sync has something to upload
            with checkpoint.saving():
                state.write_text(str(time.time()))
            time.sleep(0.1)
""")


def insights_queries(markdown: str) -> list[str]:
    """The code blocks in the sections whose title names Logs Insights."""
    queries = []
    for section in re.split(r"\n(?=#+ )", markdown):
        title = section.splitlines()[0]
        if "Logs Insights" in title:
            queries += re.findall(r"```\n(.*?)```", section, re.S)
    return queries


def fields_used(query: str) -> set[str]:
    """The event fields a query reads: not keywords, functions, aliases, @-fields, strings."""
    text = re.sub(r'"[^"]*"', " ", query)
    aliases = set(re.findall(r"\bas\s+([A-Za-z_]\w*)", text))
    functions = set(re.findall(r"\b([A-Za-z_]\w*)\s*\(", text))
    words = set(re.findall(r"(?<![@\w.])([A-Za-z_][\w.]*)", text))
    return words - _KEYWORDS - aliases - functions


def test_the_query_parser_finds_fields() -> None:
    query = 'fields @timestamp, event\n| filter job_id = "x" | stats sum(elapsed) as s by attempt'
    assert fields_used(query) == {"event", "job_id", "elapsed", "attempt"}


def emitted_fields(events: list[dict[str, Any]]) -> set[str]:
    return {key for e in events for key in e}


def test_every_field_the_logs_insights_queries_use_is_emitted(tmp_path: Path) -> None:
    queries = insights_queries(OPERATORS.read_text())
    assert len(queries) >= 3, "the Logs Insights sections of docs/operators.md moved"
    used = set().union(*(fields_used(q) for q in queries))
    assert {"job_id", "attempt", "event"} <= used

    job = [sys.executable, "-c", _JOB]
    args = ["--job-id", "docs", "--grace-period", "20s", "--upload-reserve", "5s"]
    events: list[dict[str, Any]] = []
    # 1. interrupted after a sync: agent.exit why=interrupted, with elapsed
    first = start_agent(tmp_path, args, job, env=_env(tmp_path, RUN_FOREVER="1"))
    first.wait_for(lambda: first.has_line("ready"), what="the job to start")
    first.wait_for(lambda: bool(_named(first.events(), "sync.committed")), what="a sync")
    first.signal()
    assert first.wait(60) == 75, first.stderr
    events += first.events()
    # 2. resumed: restore.done with attempt > 1, then the job exits by itself
    second = run_agent(tmp_path, args, job, env=_env(tmp_path))
    assert second.proc.returncode == 0, second.stderr
    events += second.events()
    # 3. interrupted while the store is gone: sync.final_failed
    third = start_agent(tmp_path, args, job, env=_env(tmp_path, RUN_FOREVER="1"))
    third.wait_for(lambda: third.has_line("ready"), what="the job to start")
    third.wait_for(lambda: bool(_named(third.events(), "sync.committed")), what="a sync")
    state = tmp_path / "state" / "spot-agent" / "jobs" / "docs" / "checkpoint" / "state"
    seen = state.read_text()
    third.wait_for(lambda: state.read_text() != seen, what="new state after that sync")
    store = tmp_path / "store"
    shutil.move(store, tmp_path / "store.away")
    store.write_text("not a directory: every write to the store fails\n")
    third.signal()
    third.wait(60)  # its exit code is the runner's business (issue 16: not 75 then)
    events += third.events()

    assert _named(events, "sync.final_failed"), third.stdout
    missing = used - emitted_fields(events)
    assert missing == set(), f"docs/operators.md queries use fields no run emits: {missing}"


def _named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == name]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    from tests.agentproc import agent_env

    return agent_env(tmp, extra)
