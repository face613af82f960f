"""Hugging Face ``transformers``: one callback makes a ``Trainer`` job a spot-agent job.

    import checkpoint.hf

    trainer = Trainer(..., args=TrainingArguments(output_dir=..., save_steps=...),
                      callbacks=[checkpoint.hf.SpotAgentCallback()])
    trainer.train(resume_from_checkpoint=checkpoint.hf.last_checkpoint(output_dir))

``output_dir`` must be inside the checkpoint dir (``checkpoint.directory()``).

How it fits the Trainer (``Trainer._maybe_log_save_evaluate``: ``on_step_end``, then the
log, the evaluation, ``_save_checkpoint`` and ``on_save``). ``_save_checkpoint`` writes the
model, optimizer, scheduler, RNG and ``trainer_state.json`` into ``checkpoint-N/`` and then
deletes the checkpoints beyond ``save_total_limit``. The callback opens a save point (the
job API's ``saving()``) in the last hook before that, ``on_step_end``/``on_epoch_end``, or
``on_evaluate`` when an evaluation comes first (so the evaluation runs outside it), and
closes it in ``on_save``. The new ``checkpoint-N/`` and the deletion of the old ones are
one save: no committed state lacks a checkpoint, none holds half of one, even with
``save_total_limit=1``. Then it asks the agent to commit (``request_sync``, without waiting).

The stop signal (or a notice) becomes, at the end of the step under way, "save and stop"
(``control.should_save``, ``control.should_training_stop``; a scheduled evaluation is
skipped): ``train()`` returns after a ``checkpoint-N/`` of that very step, and the final
checkpoint holds it.

Imports ``transformers`` (so: not from ``checkpoint/__init__.py``); Python 3.9 syntax.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from . import api
from ._agent import agent_pid

__all__ = ["SpotAgentCallback", "last_checkpoint"]

_CHECKPOINT_NAME = re.compile(r"checkpoint-([0-9]+)")
#: a checkpoint-N/ holds the model under one of these names (whole, sharded, or an adapter)
_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


class _SaveAborted(Exception):
    """Thrown into a save point that never saw its save: it ends unfinished, not whole."""


class SpotAgentCallback(TrainerCallback):
    """Each save of the Trainer is a save point, and the stop signal means "save and stop".

    ``sync_on_save=False`` leaves commits to the agent's periodic syncs (each still sees
    whole saves only).
    """

    def __init__(self, *, sync_on_save: bool = True) -> None:
        self.sync_on_save = sync_on_save
        #: set when the stop signal or a notice ended the training
        self.stopped = False
        self._save: contextlib.AbstractContextManager[None] | None = None
        self._after_evaluate = False
        api.handle_stop()  # from now on, not only once training has begun

    # -- the save point -----------------------------------------------------------------

    def _begin(self) -> None:
        if self._save is None:
            save = api.saving()
            save.__enter__()
            self._save = save

    def _end(self, *, whole: bool) -> None:
        self._after_evaluate = False
        save, self._save = self._save, None
        if save is None:
            return
        if whole:
            save.__exit__(None, None, None)
        else:  # end_save is skipped: the agent treats it as a save cut off
            save.__exit__(_SaveAborted, _SaveAborted(), None)

    def _expect_save(self, args: TrainingArguments, control: TrainerControl) -> None:
        if not args.should_save:  # another rank of a distributed run: rank 0 writes
            return
        best = args.save_strategy == "best"  # the save is decided after the evaluation
        if control.should_save or (best and control.should_evaluate):
            if control.should_evaluate:
                self._after_evaluate = True
            else:
                self._begin()

    # -- the Trainer's hooks --------------------------------------------------------------

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._end(whole=False)  # left open by a train() that raised mid-save
        self.stopped = False
        api.handle_stop()
        _check_inside_checkpoint_dir(args.output_dir)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._end(whole=True)  # a save that was expected and did not come (best strategy)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if api.interrupted():
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False  # the time left is for the save
            self.stopped = True
        self._expect_save(args, control)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if self.stopped:  # this step is saved already; no evaluation, no second save
            control.should_evaluate = control.should_save = False
        self._expect_save(args, control)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if self._after_evaluate:
            self._after_evaluate = False
            self._begin()

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._end(whole=True)
        if self.sync_on_save and args.should_save:
            api.request_sync(freeze_timeout=0)  # the agent commits it; training goes on

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._end(whole=True)


def _check_inside_checkpoint_dir(output_dir: str | None) -> None:
    """Under the agent, saves outside the checkpoint dir would never be checkpointed."""
    if agent_pid() is None or output_dir is None:
        return
    root = api.directory().resolve()
    out = Path(output_dir).resolve()
    if out != root and root not in out.parents:
        raise ValueError(
            f"TrainingArguments.output_dir={output_dir!s} is outside the checkpoint dir "
            f"{root} (CHECKPOINT_DIR): its checkpoints would not survive an interruption"
        )


def last_checkpoint(output_dir: str | os.PathLike[str]) -> str | None:
    """The newest whole ``checkpoint-N/`` in ``output_dir``, for ``resume_from_checkpoint``;
    None when there is none (a fresh start).

    Whole: its ``trainer_state.json`` (written after the model, optimizer and RNG states)
    parses and names step N, and the model weights are there. Under the agent with the
    callback, a restored dir only ever holds whole ones; this also skips what a run
    without save points left half-written.
    """
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(output_dir):
            m = _CHECKPOINT_NAME.fullmatch(entry.name)
            if m and entry.is_dir() and _whole(Path(entry.path), int(m.group(1))):
                found.append((int(m.group(1)), entry.path))
    return max(found)[1] if found else None


def _whole(path: Path, step: int) -> bool:
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("global_step") != step:
        return False
    return any((path / name).is_file() for name in _WEIGHTS)
