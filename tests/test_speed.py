"""Inference speed-ups keep results: folded BatchNorm, channels_last, inference mode, default bf16 on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d
from typer.testing import CliRunner

from fcos_cli import checkpoint
from fcos_cli.cli import app
from fcos_cli.config import preset
from fcos_cli.engine.predict import detect, inference_amp
from fcos_cli.errors import UserError
from fcos_cli.metadata import WeightsInfo
from fcos_cli.model import build_model
from fcos_cli.model.optimize import (
    cpu_supports_bf16,
    find_conv_norm_pairs,
    fold_batchnorm,
    optimize_for_inference,
    speed_up_training,
)

TOL = dict(rtol=1e-4, atol=1e-4)


def _randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial statistics and affine parameters, so that a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = m.running_mean.numel()
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def _tiny(backbone: str = "test_resnet", freeze_bn: bool = False):
    cfg = preset("improved")
    cfg.model.backbone.name, cfg.model.backbone.freeze_bn = backbone, freeze_bn
    cfg.model.fpn.out_channels, cfg.model.head.num_groups, cfg.model.head.num_convs = 32, 8, 2
    cfg.model.num_classes = 3
    cfg.post.score_thresh = 0.0  # random weights: every candidate, so that detections can be compared
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    _randomise_norms(model)
    with torch.no_grad():  # spread the scores: near-ties would make the detection order arbitrary
        for conv in (model.head.cls_logits, model.head.centerness):
            conv.weight.normal_(std=0.5)
    return model, cfg


def _assert_same_outputs(a, b) -> None:
    for name, xs, ys in zip(a._fields, a, b, strict=True):
        for x, y in zip(xs, ys, strict=True):
            torch.testing.assert_close(y, x, **TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backbone,freeze_bn", [("test_resnet", False), ("test_resnet", True),
                                                ("test_efficientnet", False)])
def test_optimized_model_gives_the_plain_outputs(backbone: str, freeze_bn: bool) -> None:
    model, cfg = _tiny(backbone, freeze_bn)
    num_norms = sum(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in model.backbone.body.modules())
    fast = optimize_for_inference(model)
    assert num_norms > 0 and fast.num_folded_norms == num_norms
    assert not any(isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)) for m in fast.modules())
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in fast.modules()
               if isinstance(m, nn.Conv2d))
    images = torch.rand(2, 3, 96, 128)
    with torch.inference_mode():
        _assert_same_outputs(model(images), fast(images))
    sizes = [(96, 128), (90, 100)]
    for plain, quick in zip(detect(model, cfg, images, sizes), detect(fast, cfg, images, sizes), strict=True):
        assert len(plain["boxes"]) > 0
        torch.testing.assert_close(quick["boxes"], plain["boxes"], **TOL)
        torch.testing.assert_close(quick["scores"], plain["scores"], **TOL)
        assert torch.equal(quick["labels"], plain["labels"])


def test_optimizing_leaves_the_saved_weights_plain(tmp_path: Path) -> None:
    model, cfg = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(v.is_contiguous() for v in after.values())  # no channels_last leaked into the original
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    names = [f"c{i}" for i in range(cfg.model.num_classes)]
    path = checkpoint.save(tmp_path / "plain.safetensors", model, WeightsInfo(cfg, names))
    loaded, _, _ = checkpoint.load(path)
    images = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        _assert_same_outputs(model(images), loaded(images))
    # The optimized copy lacks the BatchNorm tensors: its file does not load as a model, never silently wrong.
    bad = checkpoint.save(tmp_path / "optimized.safetensors", fast, WeightsInfo(cfg, names))
    with pytest.raises(UserError, match="do not fit"):
        checkpoint.load(bad)


class _Shared(nn.Module):
    """The conv's output feeds the norm and a skip connection: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.norm(y) + y


class _DataDependent(nn.Module):
    """Control flow on values: not traceable, so nothing may be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.norm(self.conv(x))
        return y if y.sum() > 0 else -y


class _Twice(nn.Module):
    """One norm called on two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.norm = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.norm(self.a(x)) + self.norm(self.b(x))


@pytest.mark.parametrize("module", [_Shared(), _DataDependent(), _Twice()], ids=lambda m: type(m).__name__)
def test_unprovable_pairs_are_not_folded(module: nn.Module) -> None:
    _randomise_norms(module)
    module.eval()
    x = torch.randn(2, 3, 8, 8)
    expected = module(x)
    assert find_conv_norm_pairs(module) == []
    assert fold_batchnorm(module) == 0
    torch.testing.assert_close(module(x), expected)


def test_norm_variants_fold_and_training_norms_do_not() -> None:
    torch.manual_seed(0)
    act = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), BatchNormAct2d(8, act_layer=nn.ReLU),
                        nn.Conv2d(8, 8, 1), FrozenBatchNorm2d(8))
    _randomise_norms(act)
    act.eval()
    x = torch.randn(2, 3, 16, 16)
    expected = act(x)
    assert fold_batchnorm(act) == 2
    assert isinstance(act[1], nn.Sequential) and isinstance(act[1][1], nn.ReLU)  # the activation stays
    torch.testing.assert_close(act(x), expected, **TOL)

    training = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).train()
    assert fold_batchnorm(training) == 0 and isinstance(training[1], nn.BatchNorm2d)


def test_speed_up_training_keeps_names_and_saves_plain(tmp_path: Path) -> None:
    model, cfg = _tiny()
    keys = list(model.state_dict())
    speed_up_training(model.train())
    assert list(model.state_dict()) == keys
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in model.modules()
               if isinstance(m, nn.Conv2d))
    path = checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, ["a", "b", "c"]))
    loaded, _, _ = checkpoint.load(path)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


def test_default_precision() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # no GPU needed: only the device type is read
    assert inference_amp(cpu) == cpu_supports_bf16()
    assert inference_amp(cpu, fp32=True) is False
    assert inference_amp(cpu, half=True) is True
    assert inference_amp(cuda) is False and inference_amp(cuda, half=True) is True
    assert inference_amp(cuda, half=True, fp32=True) is False


def test_detect_under_bf16_decodes_in_float32() -> None:
    model, cfg = _tiny()
    fast = optimize_for_inference(model)
    images = torch.rand(1, 3, 64, 96)
    for det in detect(fast, cfg, images, [(64, 96)], amp=True):
        assert det["boxes"].dtype == det["scores"].dtype == torch.float32
        assert not det["boxes"].is_inference()  # callers may edit results in place
        det["boxes"] += 1


def test_cli_eval_default_half_and_fp32_agree(overfit, tmp_path: Path) -> None:
    result, root = overfit
    runner = CliRunner()
    aps = {}
    expected = {"default": "bf16 autocast" if cpu_supports_bf16() else "float32", "half": "bf16 autocast",
                "fp32": "float32"}
    for name, precision in expected.items():
        flags = [] if name == "default" else [f"--{name}"]
        out = runner.invoke(app, ["eval", "-w", str(result.best), "--data", str(root / "train.json"),
                                  "--project", str(tmp_path), "--name", name, *flags])
        assert out.exit_code == 0, out.output
        assert f"precision: {precision}" in out.output
        aps[name] = json.loads((tmp_path / name / "metrics.json").read_text())["metrics"]["AP50"]
    assert aps["fp32"] > 0.5 and all(abs(ap - aps["fp32"]) < 0.05 for ap in aps.values()), aps


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_cli_rejects_half_with_fp32(overfit, tmp_path: Path, command: str) -> None:
    result, root = overfit
    source = [str(next((root / "images").glob("*.jpg")))] if command == "predict" else ["--data", "demo"]
    out = CliRunner().invoke(app, [command, *source, "-w", str(result.best), "--half", "--fp32",
                                   "--project", str(tmp_path)])
    assert out.exit_code == 2 and "contradict" in out.output


def test_compile_is_applied_to_the_copy_only() -> None:
    model, _ = _tiny()
    fast = optimize_for_inference(model, compile=True)  # compiles lazily, at the first call (not run here)
    assert fast._compiled_call_impl is not None and model._compiled_call_impl is None
