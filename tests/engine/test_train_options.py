"""Training options: the learning-rate schedule, bf16 autocast on CPU, and the weight EMA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors import safe_open

from fcos_cli import checkpoint
from fcos_cli.config import TrainConfig
from fcos_cli.data import open_split
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.engine import autocast
from fcos_cli.engine.state import state_path
from fcos_cli.engine.train import lr_factor, train
from fcos_cli.model import build_model
from fcos_cli.pipeline import loss_for


def test_warmup_then_cosine_or_steps() -> None:
    cfg = TrainConfig(warmup_steps=10, schedule="cosine")
    assert lr_factor(0, 100, cfg) == pytest.approx(0.001)
    assert lr_factor(5, 100, cfg) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(10, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(55, 100, cfg) == pytest.approx(0.01 + 0.99 * 0.5)  # half way through the cosine
    assert lr_factor(100, 100, cfg) == pytest.approx(0.01)
    steps = TrainConfig(warmup_steps=10, schedule="step")
    assert [lr_factor(s, 90, steps) for s in (30, 59, 60, 79, 80)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert lr_factor(0, 9, TrainConfig(warmup_steps=500)) == pytest.approx(0.001)  # warm-up capped at 1/3
    assert lr_factor(3, 9, TrainConfig(warmup_steps=500)) == pytest.approx(1.0)


def test_bf16_autocast_keeps_boxes_and_losses_in_float32() -> None:
    cfg = tiny_config(epochs=1)
    cfg.model.num_classes = 3
    model = build_model(cfg.model)
    images = torch.rand(2, 3, 96, 128)
    with autocast(torch.device("cpu"), True):
        outputs = model(images)
    assert outputs.cls_logits[0].dtype == torch.bfloat16  # the convs really ran in bf16
    assert all(b.dtype == torch.float32 for b in outputs.box_regression)
    boxes = [torch.tensor([[10.5, 20.25, 70.0, 90.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.long)]
    losses = loss_for(outputs, model.strides, boxes, labels, cfg)
    assert losses.total.dtype == torch.float32 and torch.isfinite(losses.total)
    losses.total.backward()
    assert model.head.cls_logits.weight.grad.abs().sum() > 0


def test_amp_and_ema_training_run(tmp_path: Path) -> None:
    root = write_demo_data(tmp_path / "data", num_train=4, num_val=1, max_side=192, seed=2)
    cfg = tiny_config(epochs=2)
    cfg.train.amp, cfg.train.ema, cfg.train.batch_size = True, True, 1  # 8 steps: past the EMA warm-up
    result = train(cfg, open_split(root / "train.json"), open_split(root / "val.json"), tmp_path / "run",
                   torch.device("cpu"))
    assert result.final is not None
    saved = checkpoint.load(result.last)[0].state_dict()  # the EMA weights
    with safe_open(str(state_path(result.last)), framework="pt") as f:
        raw = f.get_tensor("model.head.cls_logits.weight")  # the trained weights, for --resume
    assert torch.isfinite(raw).all()
    assert not torch.equal(saved["head.cls_logits.weight"], raw)


def test_compiled_training_matches_eager(tmp_path: Path, monkeypatch) -> None:
    """`train.compile` (torch.compile) trains the same model: same weights as eager, within rounding.

    Dynamo and AOT autograd as `fcos train --compile` runs them, with the eager backend instead of inductor,
    whose C++ kernel builds take over a minute on two cores.
    """
    eager_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: eager_compile(self, backend="aot_eager", **kw))
    root = write_demo_data(tmp_path / "data", num_train=2, num_val=1, max_side=96, seed=3)
    weights = {}
    for compile in (False, True):
        cfg = tiny_config(epochs=1)
        cfg.train.compile, cfg.train.batch_size, cfg.train.ema = compile, 2, compile  # EMA copies the compiled model
        cfg.train.optimizer = "sgd"  # Adam's normalised steps would magnify rounding in near-zero gradients
        result = train(cfg, open_split(root / "train.json"), open_split(root / "val.json"), tmp_path / f"run{compile}",
                       torch.device("cpu"))
        assert result.final is not None  # the compiled model's EMA copy evaluated too
        with safe_open(str(state_path(result.last)), framework="pt") as f:
            weights[compile] = {k: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it really compiled
    assert weights[True].keys() == weights[False].keys()
    for k, v in weights[False].items():
        torch.testing.assert_close(weights[True][k], v, rtol=1e-3, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
