"""Renderers and the choice of format: JSON for pipelines, compact lines for a person."""

from __future__ import annotations

import io
import json
import os
import pty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent import logs
from agent.config import RUN_OPTIONS, ConfigError, load_settings
from agent.logs.render import ConsoleRenderer, human_bytes

CONTEXT = {"job_id": "train-42", "attempt": 3, "agent_version": "1.0"}


def console(width: int = 80, color: bool = False) -> ConsoleRenderer:
    return ConsoleRenderer(lambda: CONTEXT, color=color, width=lambda: width)


def event(name: str, level: str = "info", **fields: Any) -> dict[str, Any]:
    return {"timestamp": "2025-03-02T09:14:03Z", "level": level, "event": name, **CONTEXT, **fields}


def test_console_shows_the_context_once_then_marked_compact_lines() -> None:
    render = console(width=120)
    first = render(event("agent.start", store="s3://b/p")).splitlines()
    assert first == [
        "spot-agent ▸ job_id=train-42 attempt=3 agent_version=1.0",
        "spot-agent ▸ agent.start store=s3://b/p",
    ]
    line = render(
        event(
            "sync.committed",
            reason="periodic",
            sequence=4,
            files=12,
            bytes=1_234_567,
            seconds=0.31,
            bytes_uploaded=4096,
        )
    )
    assert line == (
        "spot-agent ▸ sync.committed seq=4 files=12 1.2 MB 0.3 s reason=periodic "
        "bytes_uploaded=4.1 kB"
    )


def test_console_lines_fit_80_columns_but_warnings_are_kept_whole() -> None:
    render = console()
    render(event("x"))  # the context line
    long = render(event("child.started", command=["python", "train.py", "--epochs", "9" * 90]))
    assert len(long) == 80 and long.endswith("…")
    why = "the metadata service did not answer: " + "x" * 80
    warning = render(event("imds.unreachable", level="warning", why=why))
    assert warning.startswith("spot-agent ▸ warning: imds.unreachable") and why in warning


def test_colour_only_when_asked() -> None:
    plain = console()(event("agent.exit", exit_code=0))
    assert "\x1b[" not in plain
    coloured = console(color=True)(event("sync.failed", level="error", error="boom"))
    assert "\x1b[31merror: sync.failed\x1b[0m" in coloured


def test_a_changed_context_is_shown_again() -> None:
    ctx = dict(CONTEXT)
    render = ConsoleRenderer(lambda: ctx)
    assert len(render(event("a")).splitlines()) == 2
    assert len(render(event("b")).splitlines()) == 1
    ctx["instance_id"] = "i-0abc"
    assert "instance_id=i-0abc" in render(event("c")).splitlines()[0]


def test_sizes_read_as_a_person_would() -> None:
    assert [human_bytes(n) for n in (0, 999, 1000, 2_147_483_648)] == [
        "0 B", "999 B", "1.0 kB", "2.1 GB"
    ]  # fmt: skip


@pytest.fixture
def terminal() -> Iterator[tuple[io.TextIOWrapper, io.TextIOWrapper]]:
    master, slave = pty.openpty()
    out = os.fdopen(slave, "w")
    stdin = os.fdopen(os.dup(slave), "r")
    try:
        yield out, stdin
    finally:
        out.close()
        stdin.close()
        os.close(master)


def test_auto_is_console_only_for_a_person_at_a_terminal(
    terminal: tuple[io.TextIOWrapper, io.TextIOWrapper], tmp_path: Path
) -> None:
    tty, tty_in = terminal
    marker = tmp_path / ".dockerenv"
    choose = logs.choose_console
    assert choose("auto", tty, stdin=tty_in, pid=4242, markers=(str(marker),))
    assert not choose("auto", io.StringIO(), stdin=tty_in, pid=4242, markers=())  # piped
    assert not choose("auto", tty, stdin=io.StringIO(), pid=4242, markers=())  # stdin not a tty
    assert not choose("auto", tty, stdin=tty_in, pid=1, markers=())  # k8s tty: true, ECS
    marker.touch()
    assert not choose("auto", tty, stdin=tty_in, pid=4242, markers=(str(marker),))  # docker -t
    assert choose("console", io.StringIO()) and not choose("json", tty)


def test_the_level_filters_agent_events() -> None:
    saved = structlog.get_config()
    out = io.StringIO()
    try:
        logs.configure(out, fmt="json", level="warning")
        log = logs.get_logger()
        log.info("quiet")
        log.warning("loud")
    finally:
        structlog.configure(**saved)
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["loud"]


def settings(environ: dict[str, str]) -> Any:
    import argparse

    args = argparse.Namespace(**{o.dest: None for o in RUN_OPTIONS})
    return load_settings(args, ["true"], {"HOME": "/tmp", **environ})


def test_format_level_and_colour_settings() -> None:
    s = settings({})
    assert (s.log_format, s.log_level, s.log_color) == ("auto", "info", True)
    s = settings(
        {"SPOT_AGENT_LOG_FORMAT": "JSON", "SPOT_AGENT_LOG_LEVEL": "debug", "NO_COLOR": "1"}
    )
    assert (s.log_format, s.log_level, s.log_color) == ("json", "debug", False)
    with pytest.raises(ConfigError, match=r"--log-format \(SPOT_AGENT_LOG_FORMAT\).*text"):
        settings({"SPOT_AGENT_LOG_FORMAT": "text"})
    with pytest.raises(ConfigError, match=r"--log-level \(SPOT_AGENT_LOG_LEVEL\)"):
        settings({"SPOT_AGENT_LOG_LEVEL": "verbose"})
