"""The framework callbacks in a real training process, without an agent: where the save
point begins and ends around a framework's save, and what the stop signal does.

The job's lock file (``SPOT_AGENT_LOCK_FILE``) holds the saver's pid while a save is under
way and is empty between saves: the probes read it from inside the framework's hooks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("torch")

TRAINER_JOB = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    from transformers import (BertConfig, BertForSequenceClassification, Trainer,
                              TrainerCallback, TrainingArguments)
    import checkpoint, checkpoint.hf

    lock = os.environ["SPOT_AGENT_LOCK_FILE"]
    seen = {"eval_under_save": 0, "evals": 0, "saves_under_save": 0, "saves": 0}

    def saving():
        return os.path.exists(lock) and os.path.getsize(lock) > 0

    class Probe(TrainerCallback):  # runs before the SpotAgentCallback, listed after it
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives during step 4
        def on_save(self, args, state, control, **kw):
            seen["saves"] += 1
            seen["saves_under_save"] += saving()

    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    model = BertForSequenceClassification(config)
    def forward_probe(module, args):
        if not module.training:
            seen["evals"] += 1
            seen["eval_under_save"] += saving()
    model.register_forward_pre_hook(forward_probe)
    data = [{"input_ids": torch.arange(8) % 32, "labels": i % 2} for i in range(32)]
    out = str(checkpoint.directory() / "trainer")
    args = TrainingArguments(out, max_steps=20, save_steps=2, eval_strategy="steps",
                             eval_steps=2, save_total_limit=1, per_device_eval_batch_size=32,
                             use_cpu=True, report_to="none", disable_tqdm=True)
    callback = checkpoint.hf.SpotAgentCallback()
    trainer = Trainer(model, args, train_dataset=data, eval_dataset=data,
                      callbacks=[Probe(), callback])
    trainer.callback_handler.callbacks.sort(key=lambda cb: not isinstance(cb, Probe))
    trainer.train()
    seen.update(step=trainer.state.global_step, stopped=callback.stopped,
                dirs=sorted(os.listdir(out)), lock=open(lock).read(),
                eval_steps=[e["step"] for e in trainer.state.log_history if "eval_loss" in e])
    print(json.dumps(seen))
""")

LIGHTNING_JOB = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import {pl} as pl
    import checkpoint, checkpoint.{module} as integration

    class Model(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 1)
        def training_step(self, batch, batch_idx):
            if self.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    ckpts = str(checkpoint.directory() / "ckpts")
    callback = integration.SpotAgentCallback()
    trainer = pl.Trainer(max_steps=50, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[
        pl.callbacks.ModelCheckpoint(ckpts, every_n_train_steps=2, save_top_k=1), callback])
    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=4)
    trainer.fit(Model(), data)  # returns: no SIGTERMException
    saved = torch.load(os.path.join(ckpts, "interrupted.ckpt"), weights_only=False)
    print(json.dumps(dict(
        step=trainer.global_step, stopped=callback.stopped, saved_step=saved["global_step"],
        io=type(trainer.strategy.checkpoint_io).__name__, files=sorted(os.listdir(ckpts)),
        last=os.path.basename(integration.last_checkpoint(ckpts)),
        lock=open(os.environ["SPOT_AGENT_LOCK_FILE"]).read())))
""")


def run_job(tmp_path: Path, code: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_AGENT_")}
    env.update(
        CHECKPOINT_DIR=str(tmp_path / "ck"),
        SPOT_AGENT_LOCK_FILE=str(tmp_path / "save.lock"),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf-home"),
        PYTHONPATH=str(REPO),
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.long
def test_trainer_saves_are_save_points_and_the_stop_saves_the_step(tmp_path: Path) -> None:
    seen = run_job(tmp_path, TRAINER_JOB)
    assert seen["step"] == 4 and seen["stopped"] is True  # SIGTERM during step 4
    assert seen["saves"] == 2 and seen["saves_under_save"] == 2  # checkpoint-2, -4: in one
    assert seen["evals"] >= 1 and seen["eval_under_save"] == 0  # evaluations: outside
    assert seen["eval_steps"] == [2]  # the stop skipped step 4's evaluation
    assert seen["dirs"] == ["checkpoint-4"]  # save_total_limit=1: the last step's
    assert seen["lock"] == ""  # every save ended whole


@pytest.mark.long
@pytest.mark.parametrize(
    ("pl", "module"),
    [("lightning.pytorch", "lightning"), ("pytorch_lightning", "pytorch_lightning")],
)
def test_lightning_writes_are_save_points_and_the_stop_saves_the_batch(
    tmp_path: Path, pl: str, module: str
) -> None:
    pytest.importorskip(pl)
    seen = run_job(tmp_path, LIGHTNING_JOB.format(pl=pl, module=module))
    assert seen["step"] == 4 and seen["stopped"] is True and seen["saved_step"] == 4
    assert seen["io"] == "SavePointIO"
    assert seen["files"] == ["epoch=0-step=4.ckpt", "interrupted.ckpt"]
    assert seen["last"] in seen["files"]
    assert seen["lock"] == ""
