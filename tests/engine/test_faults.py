"""Faults during training: SIGKILL (also inside a checkpoint write), Ctrl-C mid-epoch, non-finite losses.

Stops as schedulers deliver them (signals to a process group, torchrun, --time) are in test_stop.py."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_same_weights, epochs_in, start_fcos, tiny_config, train_args, wait_for, weights_of
from typer.testing import CliRunner

from fcos_cli import checkpoint
from fcos_cli.cli import app
from fcos_cli.data import open_split
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.engine import train as train_module
from fcos_cli.engine.train import TrainingDiverged, TrainingInterrupted, train
from fcos_cli.losses import FCOSLosses

CPU = torch.device("cpu")
HOOKED = str(Path(__file__).parents[1] / "hooked_fcos.py")  # fcos with a rename held back


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_demo_data(tmp_path_factory.mktemp("demo"), num_train=6, num_val=1, max_side=128, seed=4)


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def test_sigkill_twice_then_resume_equals_uninterrupted_training(demo: Path, tmp_path: Path) -> None:
    epochs = 4
    reference = CliRunner().invoke(app, train_args(demo, tmp_path / "reference", epochs))
    assert reference.exit_code == 0, reference.output
    run = tmp_path / "killed" / "run"
    last = run / "last.safetensors"

    # 1. Killed at some point after the first checkpoint.
    first = start_fcos(train_args(demo, tmp_path / "killed", epochs))
    wait_for(last, first)
    _kill(first)
    epoch_after_first_kill = checkpoint.read_info(last).epoch
    checkpoint.load(last)  # the last complete checkpoint loads

    # 2. Resumed, then killed inside the write of the next weights file (the rename is held back).
    second = subprocess.Popen([sys.executable, HOOKED, "train", "--resume", str(last)], text=True,
                              env={**os.environ, "FCOS_CLI_TEST_RENAME_DELAY": "last.safetensors:60"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(run / ".last.tmp.safetensors", second)
    _kill(second)
    assert (run / ".last.tmp.safetensors").exists()  # really killed mid-write
    resumable_epoch = checkpoint.read_info(last).epoch
    assert resumable_epoch >= epoch_after_first_kill
    checkpoint.load(last)

    # 3. Resumed to the end, now with a loader worker: same weights as the uninterrupted run, every epoch once.
    third = subprocess.run([sys.executable, "-m", "fcos_cli", "train", "--resume", str(last), "--workers", "1"],
                           capture_output=True, text=True, timeout=55)
    assert third.returncode == 0, third.stderr
    assert epochs_in(run) == list(range(1, epochs + 1))
    assert_same_weights(weights_of(last), weights_of(tmp_path / "reference" / "run" / "last.safetensors"))


def test_ctrl_c_mid_epoch_saves_the_last_step_and_resume_continues_exactly(
        demo: Path, tmp_path: Path, monkeypatch) -> None:
    index, val = open_split(demo / "train.json"), open_split(demo / "val.json")
    cfg = lambda: tiny_config(epochs=2)  # noqa: E731 - batch 4 on 6 images: 2 steps per epoch, augmented
    full = train(cfg(), index, val, tmp_path / "full", CPU)
    original, calls = train_module._step, []

    def step_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        losses = original(*args, **kwargs)
        if len(calls) == 3:  # the first step of epoch 2
            signal.raise_signal(signal.SIGINT)
        return losses

    monkeypatch.setattr(train_module, "_step", step_then_ctrl_c)
    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg(), index, val, tmp_path / "cut", CPU)
    assert (stop.value.epoch, stop.value.step) == (2, 3)
    info = checkpoint.read_info(stop.value.last)
    assert (info.epoch, info.step) == (1, 3)
    assert epochs_in(tmp_path / "cut") == [1]
    monkeypatch.setattr(train_module, "_step", original)
    resumed = train(checkpoint.read_info(stop.value.last).config, index, val, tmp_path / "cut", CPU,
                    resume=stop.value.last)
    assert epochs_in(tmp_path / "cut") == [1, 2]
    assert_same_weights(weights_of(resumed.last), weights_of(full.last))
    with open(tmp_path / "cut" / "metrics.csv") as a, open(tmp_path / "full" / "metrics.csv") as b:
        for x, y in zip(csv.DictReader(a), csv.DictReader(b), strict=True):  # the loss of the cut epoch is kept too
            assert float(x["loss"]) == pytest.approx(float(y["loss"]), rel=1e-5)


def _nan_at(calls: list, bad: set[int], model_params):
    original = train_module.loss_for

    def loss_for(*args, **kwargs) -> FCOSLosses:
        calls.append([p.detach().clone() for p in model_params()])
        losses = original(*args, **kwargs)
        if len(calls) in bad:
            return losses._replace(total=losses.total * float("nan"))
        return losses

    return loss_for


def test_a_nan_loss_skips_its_step_and_training_goes_on(demo: Path, tmp_path: Path, monkeypatch) -> None:
    index = open_split(demo / "train.json")
    cfg = tiny_config(epochs=2)
    cfg.train.batch_size = 2  # 3 steps per epoch
    torch.manual_seed(0)
    from fcos_cli.model import build_model

    cfg.model.num_classes = len(index.class_names)
    model = build_model(cfg.model)
    snapshots: list[list[torch.Tensor]] = []
    monkeypatch.setattr(train_module, "loss_for", _nan_at(snapshots, {3}, model.parameters))
    result = train(cfg, index, None, tmp_path, CPU, model=model)
    assert len(snapshots) == 6 and result.skipped_steps == 1

    def changed(a: int, b: int) -> bool:  # weights before call a vs before call b (1-based)
        return any(not torch.equal(x, y) for x, y in zip(snapshots[a - 1], snapshots[b - 1], strict=True))

    assert changed(2, 3) and changed(4, 5)  # the steps around it update the weights
    assert not changed(3, 4)  # step 3 (NaN) did not
    with open(tmp_path / "metrics.csv") as f:
        assert [r["skipped_steps"] for r in csv.DictReader(f)] == ["1", "0"]


def test_a_step_the_grad_scaler_skips_counts_as_skipped(demo: Path, monkeypatch) -> None:
    """fp16 (a GradScaler, here on CPU): overflowing gradients make the scaler skip the update; `_step` says so."""
    from fcos_cli.data import open_split as open_data
    from fcos_cli.engine.common import loader
    from fcos_cli.engine.distributed import Ranks
    from fcos_cli.model import build_model

    index = open_data(demo / "train.json")
    cfg = tiny_config(epochs=1)
    cfg.model.num_classes = len(index.class_names)
    model = build_model(cfg.model)
    batch = next(iter(loader(index, cfg, model.backbone.mean, train=True)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    original = train_module.loss_for
    huge = [True]  # finite loss, but loss x scale overflows float32

    def loss_for(*args, **kwargs) -> FCOSLosses:
        losses = original(*args, **kwargs)
        return losses._replace(total=losses.total * 1e36) if huge[0] else losses

    monkeypatch.setattr(train_module, "loss_for", loss_for)
    before = [p.detach().clone() for p in model.parameters()]
    assert train_module._step(model, model, batch, cfg, CPU, optimizer, scaler, Ranks()) is None
    assert scaler.get_scale() == 2.0**15
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    huge[0] = False
    assert train_module._step(model, model, batch, cfg, CPU, optimizer, scaler, Ranks()) is not None
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_many_nan_losses_in_a_row_stop_training_with_the_checkpoint_intact(
        demo: Path, tmp_path: Path, monkeypatch) -> None:
    index = open_split(demo / "train.json")
    cfg = tiny_config(epochs=3)
    cfg.train.batch_size, cfg.train.max_nonfinite_steps = 2, 3
    result = train(cfg, index, None, tmp_path, CPU)
    before = weights_of(result.last)
    cfg.train.epochs = 4
    monkeypatch.setattr(train_module, "loss_for", _nan_at([], set(range(1, 100)), lambda: []))
    with pytest.raises(TrainingDiverged, match=r"3 non-finite losses or gradients in a row.*last\.safetensors"):
        train(cfg, index, None, tmp_path, CPU, resume=result.last)
    assert_same_weights(weights_of(result.last), before)
