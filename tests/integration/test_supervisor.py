"""The supervisor with real processes: exit codes, signals, escalation, orphans, zombies."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from agent.process.spawn import SpawnError
from agent.process.supervisor import Child, become_subreaper
from agent.process.tree import own_children

PY = sys.executable


def gone_or_zombie(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def run(code: str, **kw: object) -> Child:
    child = Child([PY, "-c", textwrap.dedent(code)], **kw)  # type: ignore[arg-type]
    child.start()
    return child


@pytest.mark.parametrize("code", [0, 1, 3, 75, 255])
def test_exit_code_passes_through(code: int) -> None:
    assert run(f"raise SystemExit({code})").wait(10) == code


def test_death_by_signal_is_128_plus_n() -> None:
    child = run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert child.wait(10) == 128 + signal.SIGKILL


def test_missing_command_is_127_and_unexecutable_is_126(tmp_path: Path) -> None:
    with pytest.raises(SpawnError) as info:
        Child(["no-such-command-spot-agent"]).start()
    assert info.value.exit_code == 127
    assert "command not found" in str(info.value)
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    with pytest.raises(SpawnError) as info:
        Child([str(script)]).start()
    assert info.value.exit_code == 126


def test_child_runs_in_its_own_process_group() -> None:
    child = run("import time; time.sleep(5)")
    try:
        assert os.getpgid(child.pid) == child.pid != os.getpgrp()
    finally:
        child.kill_tree()
        child.wait(5)


def test_send_reaches_the_whole_group(tmp_path: Path) -> None:
    marker = tmp_path / "got"
    # A shell that starts a grandchild; SIGUSR2 to the group reaches the grandchild too.
    child = Child(
        [
            "sh",
            "-c",
            f"""
        {PY} -c 'import signal, sys, time, pathlib
p = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGUSR2, lambda *a: (p.write_text("usr2"), sys.exit(0)))
p.with_suffix(".ready").write_text("")
time.sleep(30)' {marker} &
        wait""",
        ]
    )
    child.start()
    deadline = time.monotonic() + 10
    while not marker.with_suffix(".ready").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send(signal.SIGUSR2)
    assert child.wait(10) is not None
    # The shell dies of it at once; the grandchild writes its marker a moment later.
    deadline = time.monotonic() + 10
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.read_text() == "usr2"


def test_child_ignoring_sigterm_is_killed_with_its_tree(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    child = run(f"""
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        g = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{g.pid}}")
        time.sleep(60)
    """)
    deadline = time.monotonic() + 10
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    grandchild = int(pids.read_text().split()[1])
    started = time.monotonic()
    code, killed = child.stop(signal.SIGTERM, timeout=0.5)
    assert killed and code == 128 + signal.SIGKILL
    assert time.monotonic() - started < 10
    # The grandchild was killed too: gone, or a zombie waiting for its reaper, once the
    # kernel has delivered the SIGKILL.
    assert gone_or_zombie(grandchild, within=5)


def test_stop_returns_the_code_of_a_child_that_obeys() -> None:
    child = run("import time; time.sleep(60)")
    code, killed = child.stop(signal.SIGTERM, timeout=10)
    assert (code, killed) == (128 + signal.SIGTERM, False)


def test_leftover_processes_are_ended_after_the_job_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg"
    child = Child(
        ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; exit 0"], reaper=become_subreaper()
    )
    child.start()
    assert child.wait(10) == 0
    bg = int(pidfile.read_text())
    assert child.reap_leftovers(grace=2) == 1
    assert gone_or_zombie(bg, within=5)


REAPER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from agent.process.supervisor import Child
    assert os.getpid() == 1, os.getpid()
    # The job double-forks 20 orphans that exit at once: as PID 1 we must reap them all.
    child = Child(["sh", "-c", "for i in $(seq 20); do (sh -c 'exit 0' &) ; done; sleep 1; exit 7"],
                  reaper=True)
    child.start()
    code = child.wait(20)
    time.sleep(0.3)
    child.reap()
    zombies = [l for l in os.popen("ps -eo stat=").read().split() if l.startswith("Z")]
    print(code, child.reaped_orphans, len(zombies))
    """
)


def test_pid1_reaps_orphaned_zombies() -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"this machine does not allow PID namespaces: {probe.stderr.decode().strip()}")
    out = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", PY, "-c", REAPER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    code, reaped, zombies = (int(x) for x in out.stdout.split())
    assert code == 7
    assert reaped >= 20
    assert zombies == 0


def test_kill_tree_reaches_an_orphan_that_left_the_process_group(tmp_path: Path) -> None:
    """A daemon the job started with setsid is no longer in its group, but is still its own."""
    pidfile = tmp_path / "daemon"
    child = Child(
        # The subshell exits at once: the daemon is orphaned and re-parented to the reaper.
        ["sh", "-c", f"(setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' &); sleep 300"],
        reaper=become_subreaper(),
    )
    child.start()
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    daemon = int(pidfile.read_text())
    assert os.getpgid(daemon) != child.pid
    child.stop(signal.SIGTERM, timeout=0.2)
    child.reap_leftovers(grace=1)
    assert gone_or_zombie(daemon, within=5)


def _in_fresh_process(code: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run supervisor code in a process of its own (its signal state and death are its own)."""
    return subprocess.run(
        [PY, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.DEVNULL,
    )


def test_the_job_starts_with_default_dispositions_and_an_empty_mask() -> None:
    """tini's sigconf case: what the agent blocks or ignores is not the job's."""
    out = _in_fresh_process(
        """
        import signal, subprocess
        from agent.process.supervisor import Child
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR2})
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTTOU, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        child = Child(["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])
        child.start()
        raise SystemExit(child.wait(20))
        """
    )
    assert out.returncode == 0, out.stderr
    masks = dict(line.split(":\t") for line in out.stdout.splitlines())
    assert masks == {"SigBlk": "0000000000000000", "SigIgn": "0000000000000000"}, out.stdout


def test_the_job_dies_with_the_agent() -> None:
    """Issue 16, item 9: a kill -9 of the agent must not leave the job unsupervised."""
    out = _in_fresh_process(
        """
        import os
        from agent.process.supervisor import Child
        child = Child(["sleep", "300"])
        print(child.start(), flush=True)
        os._exit(0)  # as abrupt as a SIGKILL: no cleanup of ours runs
        """
    )
    job = int(out.stdout)
    assert gone_or_zombie(job, within=10), "the job outlived its agent"


def test_a_job_started_from_a_passing_thread_outlives_that_thread() -> None:
    """The parent-death signal follows the forking *thread*: only the main thread sets it."""
    out = _in_fresh_process(
        """
        import threading, time
        from agent.process.supervisor import Child
        child = Child(["sleep", "300"])
        t = threading.Thread(target=child.start)
        t.start(); t.join()
        time.sleep(0.5)
        alive = child.reap() is None
        child.kill_tree(); child.wait(10)
        print(alive)
        """
    )
    assert out.stdout.strip() == "True", out.stdout + out.stderr


def test_a_job_stopped_without_a_terminal_waits_for_a_sigcont() -> None:
    """No job control around (stdin is no terminal): the supervisor does not stop itself."""
    child = run("import time; time.sleep(60)")
    try:
        child.send(signal.SIGTSTP)
        deadline = time.monotonic() + 10
        while child.stopped_by is None and time.monotonic() < deadline:
            assert child.reap() is None
            time.sleep(0.02)
        assert child.stopped_by == signal.SIGTSTP and child.suspensions == 0
        assert psutil.Process(child.pid).status() == psutil.STATUS_STOPPED
        child.send(signal.SIGCONT)
        assert child.stopped_by is None
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() == psutil.STATUS_STOPPED:
            assert time.monotonic() < deadline, "SIGCONT did not continue the job"
            time.sleep(0.02)
        assert child.reap() is None  # a stop is not an exit
    finally:
        child.kill_tree()
        child.wait(5)


def test_own_children_are_those_psutil_finds_from_every_thread() -> None:
    """The children the agent had before its job, read from /proc without psutil: those
    forked by any of its threads, and none that has been reaped."""
    import threading

    procs: list[subprocess.Popen[bytes]] = [subprocess.Popen(["sleep", "30"])]
    thread = threading.Thread(target=lambda: procs.append(subprocess.Popen(["sleep", "30"])))
    thread.start()
    thread.join()
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        mine = {p.pid for p in procs}
        assert mine <= own_children()
        assert gone.pid not in own_children()
        assert own_children() == {p.pid for p in psutil.Process().children()}
    finally:
        for p in procs:
            p.kill()
            p.wait()
