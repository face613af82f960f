"""What ``checkpoint.lightning`` and ``checkpoint.pytorch_lightning`` share, written once.

The two packages define distinct ``Callback`` and ``CheckpointIO`` classes (a Trainer
accepts only its own), so each module derives its classes from these mixins and its
package's bases. No framework is imported here.

How it fits Lightning: every ``.ckpt`` the Trainer writes or deletes goes through the
strategy's ``CheckpointIO`` (``Strategy.save_checkpoint``/``remove_checkpoint``), whoever
asked (``ModelCheckpoint``, ``trainer.save_checkpoint``). The callback wraps that object
in ``setup``, so each write and each deletion is a save point of its own, and each write
is followed by a sync request. ``ModelCheckpoint`` deletes an old file only after the new
one is written, so no committed state lacks a checkpoint, and none holds half of one.

The stop signal (or a notice), seen at the end of a training batch, saves
``interrupted.ckpt`` beside the ``ModelCheckpoint`` files and sets ``trainer.should_stop``:
``fit`` returns after that batch, and the final checkpoint holds its state. The file is
removed when a later ``fit`` completes. Lightning's own SIGTERM handler would end ``fit``
by raising ``SIGTERMException`` at points of its own, possibly before that save; so for
the fit, the callback puts the job API's handler back in its place (Lightning restores
its own list of handlers at teardown).
"""

from __future__ import annotations

import contextlib
import os
import signal
import zipfile
from pathlib import Path
from typing import Any

from . import api, protocol
from ._agent import agent_pid, signal_named

#: the file saved when the stop signal ends a fit
STOP_FILENAME = "interrupted.ckpt"


class SavePointIOMixin:
    """A ``CheckpointIO`` around the Trainer's own: its writes and deletions as save points."""

    def __init__(self, inner: Any, *, sync_on_save: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self.sync_on_save = sync_on_save

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, *args: Any, **kw: Any) -> None:
        with api.saving():
            self.inner.save_checkpoint(checkpoint, path, *args, **kw)
        if self.sync_on_save:
            api.request_sync(freeze_timeout=0)  # the agent commits it; training goes on

    def load_checkpoint(self, *args: Any, **kw: Any) -> Any:
        return self.inner.load_checkpoint(*args, **kw)

    def remove_checkpoint(self, path: Any) -> None:
        with api.saving():
            self.inner.remove_checkpoint(path)

    def teardown(self) -> None:
        self.inner.teardown()


class CallbackMixin:
    """Saves as save points; the stop signal saves this batch and ends the fit."""

    #: the ``CheckpointIO`` class of the same package (set by the subclass)
    io_class: type[SavePointIOMixin]

    def __init__(self, *, sync_on_save: bool = True, dirpath: str | None = None) -> None:
        super().__init__()
        self.sync_on_save = sync_on_save
        self.dirpath = dirpath
        self._stop_signal: int = signal.SIGTERM
        self._stop_handler: Any = None
        #: set when the stop signal or a notice ended the fit
        self.stopped = False
        api.handle_stop()  # from now on, not only once the fit has begun

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        self.stopped = False
        api.handle_stop()
        self._stop_signal = signal_named(protocol.STOP_SIGNAL_ENV, signal.SIGTERM)
        self._stop_handler = signal.getsignal(self._stop_signal)
        io = trainer.strategy.checkpoint_io
        if isinstance(io, self.io_class):
            return
        if type(io).__name__ == "AsyncCheckpointIO":
            raise ValueError(
                "AsyncCheckpointIO writes checkpoints in the background, where no save point "
                "can cover them: drop it to use checkpoint's Lightning callback"
            )
        trainer.strategy.checkpoint_io = self.io_class(io, sync_on_save=self.sync_on_save)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Lightning installed its SIGTERM handler since ``setup``: the stop signal is ours.
        (And ``ModelCheckpoint`` has its directory now: it must be in the checkpoint dir.)"""
        self._stop_file(trainer)
        if signal.getsignal(self._stop_signal) is not self._stop_handler:
            signal.signal(self._stop_signal, self._stop_handler)
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None and getattr(connector, "received_sigterm", False):
            # it came in the meantime and reached our handler too (the job API's flag is
            # set): our save at the end of the batch ends the fit, where Lightning would
            # raise SIGTERMException after the batch, unsaved
            connector.received_sigterm = not api.interrupted()

    def on_train_batch_end(self, trainer: Any, *_: Any) -> None:
        if self.stopped or not api.interrupted():
            return
        self.stopped = True
        trainer.should_stop = True  # the fit ends after this batch...
        trainer.save_checkpoint(self._stop_file(trainer))  # ...whose state is saved now

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.stopped:
            return
        path = self._stop_file(trainer)
        if os.path.exists(path):  # the fit completed: the last stop's file is stale
            trainer.strategy.remove_checkpoint(path)

    def _stop_file(self, trainer: Any) -> str:
        dirpath = self.dirpath
        if dirpath is None:
            checkpointer = trainer.checkpoint_callback
            dirpath = getattr(checkpointer, "dirpath", None) or os.path.join(
                trainer.default_root_dir, "checkpoints"
            )
        _check_inside_checkpoint_dir(dirpath)
        return os.path.join(dirpath, STOP_FILENAME)


def _check_inside_checkpoint_dir(dirpath: str | os.PathLike[str]) -> None:
    """Under the agent, files outside the checkpoint dir would never be checkpointed."""
    if agent_pid() is None:
        return
    root = api.directory().resolve()
    path = Path(dirpath).resolve()
    if path != root and root not in path.parents:
        raise ValueError(
            f"checkpoint directory {dirpath!s} is outside the checkpoint dir {root} "
            "(CHECKPOINT_DIR): its files would not survive an interruption"
        )


def last_checkpoint(dirpath: str | os.PathLike[str]) -> str | None:
    """The newest whole ``.ckpt`` in ``dirpath`` (by modification time, which a restore
    keeps), for ``trainer.fit(..., ckpt_path=...)``; None when there is none.

    Whole: a readable zip archive (``torch.save``'s format) with its pickle inside. Under
    the agent with the callback, a restored dir only ever holds whole ones; this also
    skips what a run without save points left half-written. Links (``save_last="link"``)
    are skipped: the file they point to is a candidate itself.
    """
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(dirpath):
            ckpt = entry.name.endswith(".ckpt") and entry.is_file(follow_symlinks=False)
            if ckpt and _whole(entry.path):
                found.append((entry.stat().st_mtime_ns, entry.name, entry.path))
    return max(found)[2] if found else None


def _whole(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
