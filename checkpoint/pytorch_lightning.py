"""PyTorch Lightning (the older ``pytorch_lightning`` package): one callback makes a
``Trainer.fit`` job a spot-agent job.

    import checkpoint.pytorch_lightning

    callback = checkpoint.pytorch_lightning.SpotAgentCallback()
    trainer = pytorch_lightning.Trainer(..., callbacks=[callback])
    trainer.fit(model, ckpt_path=checkpoint.pytorch_lightning.last_checkpoint(ckpt_dir))

The checkpoint files must be inside the checkpoint dir (``checkpoint.directory()``): give
``ModelCheckpoint(dirpath=...)`` or ``default_root_dir`` a path under it. How the callback
works: :mod:`checkpoint._lightning`. For the ``lightning`` package, use
:mod:`checkpoint.lightning`.
"""

from __future__ import annotations

from lightning_fabric.plugins import CheckpointIO
from pytorch_lightning import Callback

from ._lightning import STOP_FILENAME, CallbackMixin, SavePointIOMixin, last_checkpoint

__all__ = ["STOP_FILENAME", "SavePointIO", "SpotAgentCallback", "last_checkpoint"]


class SavePointIO(SavePointIOMixin, CheckpointIO):
    """The Trainer's ``CheckpointIO``, with each write and deletion a save point."""


class SpotAgentCallback(CallbackMixin, Callback):
    """Each ``.ckpt`` written is a save point followed by a sync request; the stop signal
    saves ``interrupted.ckpt`` at the end of the batch and ends the fit."""

    io_class = SavePointIO
