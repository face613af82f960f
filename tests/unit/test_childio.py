"""The job's output as lines and events: any bytes, any length, bounded memory."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import logs
from agent.logs import childio
from agent.logs.childio import MAX_LINE, ChildOutput, LineSplitter, render_lines
from agent.process.supervisor import Child


def test_lines_split_across_chunks_and_a_last_line_without_newline() -> None:
    s = LineSplitter()
    assert s.feed(b"one\ntw") == [(b"one", 3)]
    assert s.feed(b"o\n\nthr") == [(b"two", 3), (b"", 0)]
    assert s.feed(b"ee") == []
    assert s.finish() == [(b"three", 5)]
    assert s.finish() == []


def test_a_10_mb_line_without_newline_keeps_only_its_head() -> None:
    s = LineSplitter()
    chunk = b"x" * 256 * 1024
    for _ in range(40):
        assert s.feed(chunk) == []
        assert len(s._head) <= MAX_LINE  # memory stays bounded
    [(head, length)] = s.finish()
    assert length == 40 * len(chunk) and head == b"x" * MAX_LINE
    [event] = render_lines("stdout", [(head, length)])
    doc = json.loads(event)
    assert doc["truncated"] is True and doc["line_bytes"] == length
    assert len(doc["line"]) == MAX_LINE


def test_a_long_line_inside_a_chunk_is_capped_too() -> None:
    s = LineSplitter(cap=4)
    assert s.feed(b"abcdefgh\nij\n") == [(b"abcd", 8), (b"ij", 2)]


def test_invalid_utf8_is_shown_not_lost() -> None:
    logs.reset_static()
    logs.bind_static(job_id="j", attempt=2)
    [event] = render_lines("stderr", [(b"caf\xc3\xa9 \xff\xfe\r", 9)])
    doc = json.loads(event)
    assert doc["line"] == "café \\xff\\xfe"
    assert doc["stream"] == "stderr" and doc["event"] == "child.output"
    assert list(doc)[:5] == ["timestamp", "level", "event", "job_id", "attempt"]
    assert doc["timestamp"].endswith("Z")


class Collect:
    group = "g"

    def __init__(self) -> None:
        self.messages: list[str] = []

    def accepting(self) -> bool:
        return True

    def offer(self, message: str) -> None:
        self.messages.append(message)

    def offer_many(self, messages: list[str]) -> None:
        self.messages += messages

    def drop(self, count: int) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass


@pytest.fixture
def agent_stdout(tmp_path: Path) -> Iterator[tuple[Path, Collect]]:
    """The agent's stdout is a file; events are collected as if shipped."""
    path = tmp_path / "agent-stdout"
    with open(path, "w") as out:
        logs.configure(out, json=True)
        shipper = Collect()
        logs.attach(shipper)
        try:
            yield path, shipper
        finally:
            logs.attach(None)
            logs.configure(sys.stdout)


def run_child(code: str, mode: str = "raw", **limits: int) -> ChildOutput:
    output = ChildOutput(mode, **limits)
    streams = output.child_streams()
    child = Child(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=streams.get("stdout"),
        stderr=streams.get("stderr"),
    )
    child.start()
    output.start()
    assert child.wait(30) == 0
    output.close(10)
    return output


def test_pass_through_is_byte_exact_and_events_are_capped(
    agent_stdout: tuple[Path, Collect],
) -> None:
    path, shipper = agent_stdout
    run_child("""
        import sys
        out = sys.stdout.buffer
        out.write(b"first\\n\\xff\\xfe raw\\n")
        out.write(b"y" * 10_000_000)  # 10 MB, no newline, then EOF
    """)
    data = path.read_bytes()
    assert data.startswith(b"first\n\xff\xfe raw\n" + b"y" * 10_000_000)
    # what follows the job's unfinished line is the agent's event, on a line of its own
    rest = data[len(b"first\n\xff\xfe raw\n") + 10_000_000 :]
    assert rest.startswith(b"\n{")
    events = [json.loads(m) for m in shipper.messages]
    child = [e for e in events if e["event"] == "child.output"]
    assert [e["line"] for e in child[:2]] == ["first", "\\xff\\xfe raw"]
    assert child[2]["truncated"] is True and child[2]["line_bytes"] == 10_000_000
    assert len(child[2]["line"]) == MAX_LINE
    closed = json.loads(rest.decode().strip().splitlines()[-1])
    assert closed["event"] == "child.output_closed" and closed["truncated_lines"] == 1


def test_json_mode_writes_events_not_raw_bytes(agent_stdout: tuple[Path, Collect]) -> None:
    path, _ = agent_stdout
    run_child("print('a'); print('b')", mode="json")
    lines = path.read_text().splitlines()
    assert all(line.startswith("{") for line in lines)
    assert [json.loads(x)["line"] for x in lines if 'child.output"' in x] == ["a", "b"]


def test_raw_mode_without_a_log_group_does_not_pipe() -> None:
    logs.configure(io.StringIO(), json=True)
    try:
        assert ChildOutput("raw").child_streams() == {}
        assert ChildOutput("json").child_streams() != {}
    finally:
        logs.configure(sys.stdout)


def test_idle_partial_line_is_passed_through(agent_stdout: tuple[Path, Collect]) -> None:
    path, _ = agent_stdout
    run_child(
        """
        import sys, time
        sys.stdout.write("prompt> "); sys.stdout.flush()
        time.sleep(4 * {idle})
        print("answer")
    """.replace("{idle}", str(childio.IDLE_FLUSH))
    )
    assert path.read_text().startswith("prompt> answer\n")


class Slow(Collect):
    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def offer_many(self, messages: list[str]) -> None:
        time.sleep(0.01)
        super().offer_many(messages)

    def drop(self, count: int) -> None:
        self.dropped += count


def test_a_slow_consumer_never_holds_up_the_job_and_gaps_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with open(path, "w") as out:
        logs.configure(out, json=True)
        shipper = Slow()
        logs.attach(shipper)
        try:
            output = run_child(
                "for i in range(50_000): print(i)", read_size=1024, backlog_bytes=4096
            )
        finally:
            logs.attach(None)
            logs.configure(sys.stdout)
    assert path.read_text().splitlines()[:50_000] == [str(i) for i in range(50_000)]
    assert shipper.dropped > 0 and output.dropped == shipper.dropped
    docs = [json.loads(m) for m in shipper.messages]
    shipped = [d["line"] for d in docs if d["event"] == "child.output"]
    assert len(shipped) + shipper.dropped >= 50_000
    assert shipped[:10] == [str(i) for i in range(10)]  # what is shipped keeps its order


class Refusing(Slow):
    """A shipper whose endpoint does not answer: it takes nothing."""

    def accepting(self) -> bool:
        return False


def test_lines_nobody_can_ship_are_counted_not_made_into_events(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with open(path, "w") as out:
        logs.configure(out, json=True)
        shipper = Refusing()
        logs.attach(shipper)
        try:
            output = run_child("for i in range(20_000): print(i)\nprint('end', end='')")
        finally:
            logs.attach(None)
            logs.configure(sys.stdout)
    assert path.read_text().splitlines()[:20_001] == [*map(str, range(20_000)), "end"]
    assert not [m for m in shipper.messages if '"child.output"' in m]
    assert output.lines["stdout"] == 20_001 and shipper.dropped == output.dropped == 20_001


class Flapping(Collect):
    """A shipper whose endpoint comes and goes: every other look says it is full."""

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0
        self.dropped = 0

    def accepting(self) -> bool:
        self.looks += 1
        return self.looks % 2 == 0

    def drop(self, count: int) -> None:
        self.dropped += count


def test_lines_cut_across_a_full_shipper_are_counted_once(tmp_path: Path) -> None:
    """A line begun while the shipper was full and ended after (or the other way round)
    was counted twice: 1,000,001 lines for a million (a flake of test_logs' black hole)."""
    job = """
        import os, time
        for i in range(300):
            os.write(1, b"line ")  # each line in two reads, the shipper flapping between
            time.sleep(0.001)
            os.write(1, b"%d\\n" % i)
            time.sleep(0.001)
    """
    path = tmp_path / "out"
    with open(path, "w") as out:
        logs.configure(out, json=True)
        shipper = Flapping()
        logs.attach(shipper)
        try:
            output = run_child(job)
        finally:
            logs.attach(None)
            logs.configure(sys.stdout)
    job_lines = [x for x in path.read_text().splitlines() if not x.startswith("{")]
    assert job_lines == [f"line {i}" for i in range(300)]
    assert shipper.looks > 100  # the shipper did flap while the job wrote
    assert output.lines["stdout"] == 300
