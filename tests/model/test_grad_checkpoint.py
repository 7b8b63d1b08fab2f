"""Gradient checkpointing (`--grad-checkpoint`): the same gradients, recomputed towers and stages, fewer saved
activations; `fcos train` says what it checkpoints."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import train_args
from typer.testing import CliRunner

from fcos_cli.cli import app
from fcos_cli.config import FCOSConfig, preset
from fcos_cli.model import FCOS, build_model
from fcos_cli.pipeline import loss_for


def _config() -> FCOSConfig:
    cfg = preset("improved")
    cfg.model.backbone.name, cfg.model.backbone.pretrained = "test_resnet", False
    cfg.model.fpn.out_channels, cfg.model.head.num_groups, cfg.model.head.num_convs = 32, 8, 2
    cfg.model.num_classes = 3
    return cfg


def _tiny(freeze_stages: int) -> FCOS:
    cfg = _config()
    cfg.model.backbone.freeze_stages, cfg.model.backbone.freeze_bn = freeze_stages, freeze_stages >= 0
    torch.manual_seed(0)
    return build_model(cfg.model).train()


def _loss(model: FCOS) -> torch.Tensor:
    cfg = _config()
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 96, 128, generator=g)
    boxes = [torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 20.0, 120.0, 90.0]]), torch.tensor([[0.0, 0.0, 30.0, 40.0]])]
    labels = [torch.tensor([0, 2]), torch.tensor([1])]
    return loss_for(model(images), model.strides, boxes, labels, cfg).total


# freeze_stages=1: the first checkpointed stage gets an input without gradient (a reentrant checkpoint would
# then silently drop the gradients of every parameter inside it).
@pytest.mark.parametrize("freeze_stages", [-1, 1])
def test_gradients_equal_with_and_without_checkpointing(freeze_stages: int) -> None:
    plain = _tiny(freeze_stages)
    checkpointed = copy.deepcopy(plain)
    assert checkpointed.set_grad_checkpointing(True)  # timm's ResNet supports it
    for model in (plain, checkpointed):
        _loss(model).backward()
    trained = [(name, p) for name, p in plain.named_parameters() if p.requires_grad]
    assert any(name.startswith("backbone.body.layer2.") for name, _ in trained)
    others = dict(checkpointed.named_parameters())
    for name, p in trained:
        assert p.grad is not None and others[name].grad is not None, name
        torch.testing.assert_close(others[name].grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("enable", [False, True])
def test_towers_and_stages_run_again_in_backward(enable: bool) -> None:
    model = _tiny(-1)
    model.set_grad_checkpointing(enable)
    # Pre-hooks of modules inside the checkpointed ones: the checkpointed module's own hooks fire once, and a
    # recomputation stops as soon as it has the tensors backward needs (before forward hooks would fire).
    tower, stage, last = (_count_calls(m[0]) for m in (model.head.cls_tower, model.backbone.body.layer2,
                                                       model.backbone.body.layer4))
    loss = _loss(model)
    levels = len(model.strides)
    assert (tower[0], stage[0], last[0]) == (levels, 1, 1)  # the forward alone
    loss.backward()
    # Checkpointed: backward recomputes each level's tower and the stage; timm never checkpoints the last stage.
    assert (tower[0], stage[0], last[0]) == ((2 * levels, 2, 1) if enable else (levels, 1, 1))


def _saved_bytes(model: FCOS) -> int:
    """Bytes of the distinct tensors autograd keeps for backward (what checkpointing saves)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _loss(model)
    return sum(storages.values())


def test_checkpointing_keeps_fewer_activations() -> None:
    model = _tiny(-1)
    plain = _saved_bytes(model)
    model.set_grad_checkpointing(True)
    assert _saved_bytes(model) < 0.8 * plain  # 0.69 on this tiny model
    model.set_grad_checkpointing(False)
    assert _saved_bytes(model) == plain


def test_inference_ignores_the_flag() -> None:
    model = _tiny(-1).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.set_grad_checkpointing(True)
        after = model(x)
    for a, b in zip(before, after, strict=True):
        for x_a, x_b in zip(a, b, strict=True):
            torch.testing.assert_close(x_a, x_b)


@pytest.mark.parametrize("supported", [True, False])
def test_train_option_reports_what_it_checkpoints(tmp_path: Path, monkeypatch, supported: bool) -> None:
    from fcos_cli.data.synthetic import write_demo_data

    if not supported:
        monkeypatch.setattr("fcos_cli.model.backbone.Backbone.set_grad_checkpointing", lambda self, enable=True: False)
    demo = write_demo_data(tmp_path / "demo", num_train=2, num_val=1, max_side=128)
    result = CliRunner().invoke(app, [*train_args(demo, tmp_path / "runs", epochs=1), "--grad-checkpoint"])
    assert result.exit_code == 0, result.output
    expected = ("backbone stages and head towers" if supported else
                "head towers only (timm's test_resnet has no gradient checkpointing)")
    assert f"gradient checkpointing: {expected}" in " ".join(result.output.split())
    assert json.loads((tmp_path / "runs" / "run" / "config.json").read_text())["train"]["grad_checkpoint"] is True
