"""The job's process as the loop sees it: :class:`agent.process.supervisor.Child`, its output
pipes and its resource sampler, started and closed together."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from ..config import Settings
from ..logs import childio, resources
from ..process.supervisor import Child, become_subreaper


def open_cwd() -> int | None:
    """A descriptor of the working directory that ``fchdir`` takes, or None. O_PATH needs
    no read permission on it (a directory of mode 0111 is a fine cwd)."""
    flags = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        return os.open(".", flags)
    except OSError:
        return None


class JobProcess:
    def __init__(self, s: Settings, env: Mapping[str, str]) -> None:
        self._settings = s
        self._output = childio.ChildOutput(s.child_output)
        streams = self._output.child_streams()
        self._child = Child(
            s.command,
            env=env,
            reaper=become_subreaper(),
            stdout=streams.get("stdout"),
            stderr=streams.get("stderr"),
            # blocked, it would hold off our request to stop until the SIGKILL
            unblocked=(s.stop_signal,),
        )
        self._stop_sampler = threading.Event()
        self._output_closed = False
        self.started = 0.0

    def start(self) -> int:
        """Start the job in the caller's directory, which the agent leaves for ``/`` so as
        not to pin a mount. Raises ``SpawnError``.

        The agent leaves it *before* the fork, and the job gets it back in its own process
        (by descriptor, before exec): a job that looks at once (dumb-init's test reads
        ``/proc/$PPID/cwd`` first thing) never finds the agent still there.
        """
        here = open_cwd()
        try:
            if here is not None:
                os.chdir("/")
            pid = self._child.start(directory=here)
        except BaseException:
            self._output.abandon()
            self._output_closed = True
            raise
        finally:
            if here is not None:
                os.close(here)
        if here is None:  # no descriptor for it (see open_cwd): leave it now, as late
            os.chdir("/")
        self.started = self._child.started
        self._output.start()
        resources.start_sampler(
            self._child.tree, self._settings.sample_interval, self._stop_sampler
        )
        return pid

    def pids(self) -> list[int]:
        """The job's processes now (its whole tree)."""
        return [p.pid for p in self._child.tree()]

    @property
    def running(self) -> bool:
        return self._child.running

    @property
    def reaper(self) -> bool:
        return self._child.reaper

    def send(self, sig: int, *, group: bool = True) -> None:
        """To the job's process group, or (``group=False``) to its main process only."""
        if group:
            self._child.send(sig)
        else:
            self._child.send_main(sig)

    def reap(self) -> int | None:
        return self._child.reap()

    def wait(self, timeout: float) -> int | None:
        return self._child.wait(timeout)

    def kill_tree(self) -> int:
        return self._child.kill_tree()

    def reap_leftovers(self, grace: float) -> int:
        return self._child.reap_leftovers(grace=grace)

    def close_output(self, timeout: float) -> None:
        """Read the job's last output (at most ``timeout`` seconds); once."""
        self._stop_sampler.set()
        if not self._output_closed:
            self._output_closed = True
            self._output.close(timeout)
