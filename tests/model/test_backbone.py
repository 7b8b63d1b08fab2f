"""Backbone: stride 8/16/32 levels from timm feature_info or a simple pyramid, NCHW out, clear errors,
local weights and their report, freezing, the backbone learning rate, and `fcos backbones`."""

from __future__ import annotations

import os
import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from fcos_cli.cli import app
from fcos_cli.config import BackboneConfig, TrainConfig, preset
from fcos_cli.engine.train import build_optimizer
from fcos_cli.errors import UserError
from fcos_cli.metadata import WeightsInfo
from fcos_cli.model import Backbone, build_model
from fcos_cli.model.catalog import probe_backbone
from fcos_cli.model.simple_pyramid import SimplePyramid

H, W = 64, 96  # multiples of 32: every level divides exactly


def _ints(text: str) -> set[int]:
    return {int(v) for v in re.findall(r"\d+", text)}


def _timm_channels_at(name: str, strides: tuple[int, ...]) -> list[int]:
    """Channels of the last timm level at each stride, read from a separately built timm model."""
    info = timm.create_model(name, features_only=True).feature_info
    pairs = list(zip(info.reduction(), info.channels(), strict=True))
    return [[c for r, c in pairs if r == s][-1] for s in strides]


def test_resnet_levels_channels_and_shapes():
    torch.manual_seed(0)
    backbone = Backbone("test_resnet").eval()
    # test_resnet has 5 timm levels (strides 2..32) whose channels at 8/16/32 are 48/192/96 (not monotonic).
    assert backbone.channels == [48, 192, 96]
    assert backbone.strides == [8, 16, 32]
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, H, W))
    assert len(features) == 3
    assert [tuple(f.shape) for f in features] == [(2, 48, 8, 12), (2, 192, 4, 6), (2, 96, 2, 3)]


@pytest.mark.parametrize("name", ["test_convnext", "test_efficientnet"])
def test_nchw_backbones_pick_strides_8_16_32(name):
    torch.manual_seed(0)
    backbone = Backbone(name).eval()
    assert backbone.strides == [8, 16, 32]
    assert backbone.channels == _timm_channels_at(name, (8, 16, 32))
    assert not backbone.nhwc
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, H, W))
    assert len(features) == 3
    for f, c, s in zip(features, backbone.channels, backbone.strides, strict=True):
        assert tuple(f.shape) == (2, c, H // s, W // s)


def test_mambaout_nhwc_is_permuted_to_nchw():
    torch.manual_seed(0)
    backbone = Backbone("test_mambaout").eval()
    assert backbone.nhwc
    assert backbone.strides == [8, 16, 32]
    assert backbone.channels == _timm_channels_at("test_mambaout", (8, 16, 32))
    images = torch.rand(2, 3, H, W)
    with torch.no_grad():
        features = backbone(images)
        raw = backbone.body(images)  # timm's own (B, H, W, C) maps
    assert len(features) == 3
    for f, c, s in zip(features, backbone.channels, backbone.strides, strict=True):
        assert f.shape[1] == c  # channels dim is dim 1
        assert tuple(f.shape) == (2, c, H // s, W // s)
    # The values are timm's maps, permuted (not reshaped).
    for f, i in zip(features, backbone.indices, strict=True):
        assert raw[i].shape[-1] == f.shape[1]
        assert torch.equal(f, raw[i].permute(0, 3, 1, 2))


def test_custom_strides_pick_matching_levels():
    backbone = Backbone("test_convnext", strides=(4, 8, 16, 32))
    assert backbone.strides == [4, 8, 16, 32]
    assert backbone.channels == _timm_channels_at("test_convnext", (4, 8, 16, 32))
    with torch.no_grad():
        features = backbone.eval()(torch.rand(1, 3, H, W))
    assert [f.shape[-2:] for f in features] == [(H // s, W // s) for s in (4, 8, 16, 32)]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UserError) as info:
        Backbone("resnet5O")
    message = str(info.value)
    assert "resnet5O" in message
    assert "resnet50" in message


def test_missing_stride_names_available_strides():
    with pytest.raises(UserError) as info:
        Backbone("test_resnet", strides=(4, 8, 16, 32, 64))
    message = str(info.value)
    assert {2, 4, 8, 16, 32, 64} <= _ints(message)  # the strides it has, and the one it lacks


# ---- single-stride models: the simple feature pyramid --------------------------------------------------


def test_single_stride_vit_goes_through_simple_pyramid():
    torch.manual_seed(0)
    backbone = Backbone("test_vit").eval()
    assert set(backbone.body.feature_info.reduction()) == {16}  # what timm gives: one stride
    assert backbone.pyramid is not None
    width = backbone.body.feature_info.channels()[-1]  # 64
    assert backbone.channels == [width // 2, width, width]  # one deconv halves the channels
    assert backbone.strides == [8, 16, 32]
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, 96, 160))  # not test_vit's 160 x 160: dynamic_img_size
    assert [tuple(f.shape) for f in features] == [(2, 32, 12, 20), (2, 64, 6, 10), (2, 64, 3, 5)]


def test_simple_pyramid_deconvs_identity_and_pool():
    pyramid = SimplePyramid(64, 16, (4, 8, 16, 32, 64))
    assert pyramid.channels == [16, 32, 64, 64, 64]
    assert [sum(isinstance(m, nn.ConvTranspose2d) for m in s.modules()) for s in pyramid.scales] == [2, 1, 0, 0, 0]
    x = torch.randn(2, 64, 8, 12)
    out = pyramid(x)
    assert [tuple(o.shape) for o in out] == [(2, 16, 32, 48), (2, 32, 16, 24), (2, 64, 8, 12), (2, 64, 4, 6),
                                             (2, 64, 2, 3)]
    torch.testing.assert_close(out[2], pyramid.norm(x))  # stride 16 is the (normalised) input itself
    torch.testing.assert_close(out[3], nn.functional.max_pool2d(out[2], 2))


def test_pyramid_needs_power_of_two_steps():
    with pytest.raises(UserError) as info:
        Backbone("test_vit", strides=(8, 12))
    assert "12" in str(info.value) and "stride-16" in str(info.value)


def test_probe_reads_feature_info_without_weights():
    vit, resnet, relpos = probe_backbone("test_vit"), probe_backbone("test_resnet"), probe_backbone("test_vit_relpos")
    assert vit.error is None and vit.pyramid and vit.reductions == [16, 16, 16]
    assert resnet.error is None and not resnet.pyramid
    assert (resnet.reductions, resnet.channels) == ([2, 4, 8, 16, 32], [32, 32, 48, 192, 96])
    assert probe_backbone("test_mambaout").nhwc
    assert relpos.error is not None and "320x480" in relpos.error  # builds, but only at its own size
    assert "stride-14" in probe_backbone("eva02_tiny_patch14_224").error


def test_missing_pretrained_file(tmp_path):
    with pytest.raises(UserError) as info:
        Backbone("test_resnet", pretrained_file=str(tmp_path / "nope.safetensors"))
    assert "nope.safetensors" in str(info.value)


def test_local_pretrained_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    state = timm.create_model("test_resnet").state_dict()
    # Shift every float tensor so that a fresh random init cannot match by chance (or by seed).
    state = {k: (v + 1.5 if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    path = tmp_path / "test_resnet.safetensors"
    save_file(state, str(path))

    torch.manual_seed(2)
    backbone = Backbone("test_resnet", pretrained_file=str(path))
    loaded = backbone.body.state_dict()
    assert len(loaded) > 0
    assert set(loaded) <= set(state)
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key

    # Sanity of the check itself: without the file the weights differ.
    fresh = Backbone("test_resnet").body.state_dict()
    assert not any(torch.equal(fresh[k], state[k]) for k, v in fresh.items() if v.is_floating_point())


def test_pretrained_file_that_is_not_weights(tmp_path):
    """A corrupt local weights file is the user's mistake: a UserError, not a raw SafetensorError."""
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(UserError) as info:
        Backbone("test_resnet", pretrained_file=str(path))
    assert "corrupt.safetensors" in str(info.value) or "test_resnet" in str(info.value)


def test_pretrained_file_of_another_model(tmp_path):
    """test_convnext weights given for test_resnet: no key fits, which must not pass silently."""
    state = {k: v.contiguous() for k, v in timm.create_model("test_convnext").state_dict().items()}
    path = tmp_path / "convnext.safetensors"
    save_file(state, str(path))
    with pytest.raises(UserError):
        Backbone("test_resnet", pretrained_file=str(path))


def test_pretrained_file_report_counts_and_names(tmp_path):
    """Every backbone tensor is matched by name (convnext's `stages.0` is `stages_0` in features_only);
    the classifier is reported unused, and a partial file lists what stays random."""
    full = {k: v.contiguous() for k, v in timm.create_model("test_convnext").state_dict().items()}
    path = tmp_path / "full.safetensors"
    save_file(full, str(path))
    report = Backbone("test_convnext", pretrained_file=str(path)).load_report
    assert report.matched == report.total > 0 and report.missing == []
    assert "head.fc.weight" in report.unexpected

    partial = {k: v for k, v in full.items() if not k.startswith("stages.3.")}
    path = tmp_path / "partial.safetensors"
    save_file(partial, str(path))
    report = Backbone("test_convnext", pretrained_file=str(path)).load_report
    assert report.missing and all(k.startswith("stages_3.") for k in report.missing)
    assert report.matched == report.total - len(report.missing)
    text = "\n".join(report.lines())
    assert report.summary == f"{report.matched}/{report.total} tensors" and "stages_3." in text


def test_pretrained_without_file_needs_no_network(monkeypatch):
    """pretrained=True offline with nothing cached: a UserError naming the ways out, not a hub error."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network here
    with pytest.raises(UserError):
        Backbone("test_resnet", pretrained=True)


# ---- freezing and the backbone learning rate ------------------------------------------------------------


def test_freeze_stages_freezes_stem_and_first_stages_and_they_stay_put():
    torch.manual_seed(0)
    cfg = preset("improved")
    cfg.model.num_classes, cfg.model.fpn.out_channels, cfg.model.head.num_groups = 2, 32, 8
    cfg.model.backbone = BackboneConfig(name="test_resnet", freeze_stages=2)
    model = build_model(cfg.model)
    frozen = {n for n, p in model.backbone.body.named_parameters() if not p.requires_grad}
    prefixes = ("conv1.", "bn1.", "layer1.", "layer2.")  # stem + the first two stages
    assert frozen == {n for n, _ in model.backbone.body.named_parameters() if n.startswith(prefixes)}
    assert "stem, layer1, layer2" in model.backbone.frozen[0]
    assert all(p.requires_grad for p in [*model.fpn.parameters(), *model.head.parameters()])

    optimizer = build_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    outputs = model(torch.rand(2, 3, 64, 96))
    sum(o.float().mean() for level in outputs for o in level).backward()
    optimizer.step()
    for name, param in model.named_parameters():
        moved = not torch.equal(before[name], param.detach())
        assert param.requires_grad or not moved, name  # frozen ones never move
        if name.removeprefix("backbone.body.").startswith(prefixes):
            assert not moved, name
    assert any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters() if "layer4" in n)


def test_freeze_stages_vit_uses_timm_groups():
    backbone = Backbone("test_vit", freeze_stages=1)  # patch embedding, tokens, first block
    frozen = {n for n, p in backbone.body.named_parameters() if not p.requires_grad}
    assert any("patch_embed" in n for n in frozen) and any(".blocks.0." in n for n in frozen)
    assert not any(".blocks.1." in n for n in frozen)
    assert all(p.requires_grad for p in backbone.pyramid.parameters())


def test_freeze_stages_beyond_the_model():
    with pytest.raises(UserError) as info:
        Backbone("test_resnet", freeze_stages=5)
    assert "4 stages" in str(info.value)


def test_freeze_bn_keeps_running_stats_in_train_mode():
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    backbone = Backbone("test_resnet", freeze_bn=True).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    frozen = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and "BatchNorm" in backbone.frozen[0]
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone(torch.rand(2, 3, 64, 96) * 5)  # a train-mode forward on very different statistics
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    # The affine is frozen too: weight and bias are buffers, not parameters.
    assert not any(n.endswith(("bn1.weight", "bn1.bias")) for n, _ in backbone.named_parameters())


def test_backbone_lr_mult_param_groups():
    cfg = preset("improved")
    cfg.model.num_classes, cfg.model.fpn.out_channels, cfg.model.head.num_groups = 2, 32, 8
    cfg.model.backbone = BackboneConfig(name="test_vit", lr_mult=0.1, freeze_stages=0)
    model = build_model(cfg.model)
    optimizer = build_optimizer(model, TrainConfig(lr=0.02, weight_decay=1e-4, optimizer="adamw"))
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.02, 0.02, 0.002, 0.002])  # base lr first (logged)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0, 1e-4, 0.0]
    assert all(p.ndim > 1 for g in groups[::2] for p in g["params"])  # no decay on 1-D parameters
    assert all(p.ndim <= 1 for g in groups[1::2] for p in g["params"])
    body = {id(p) for p in model.backbone.body.parameters() if p.requires_grad}
    assert {id(p) for g in groups[2:] for p in g["params"]} == body  # the trainable timm body only
    others = {id(p) for g in groups[:2] for p in g["params"]}
    assert {id(p) for p in model.backbone.pyramid.parameters()} <= others  # new layers: full lr
    assert all(p.requires_grad for g in groups for p in g["params"])  # the frozen stem is left out
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)  # sets lr = initial_lr * 0.5 per group
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.01, 0.001, 0.001])  # the ratio survives
    # Without a multiplier: the two groups as before (resume of older runs keeps working).
    assert len(build_optimizer(model, TrainConfig(), backbone_lr_mult=1.0).param_groups) == 2


def test_old_config_without_new_fields_loads():
    from fcos_cli.config import from_dict, to_dict

    data = to_dict(preset("improved"))
    for key in ("freeze_stages", "freeze_bn", "lr_mult"):
        del data["model"]["backbone"][key]
    assert from_dict(data).model.backbone == BackboneConfig()


# ---- `fcos backbones` --------------------------------------------------------------------------------------


def test_cli_check_vit_small_at_320x480():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["backbones", "--check", "vit_small_patch16_224", "--img-size", "320,480"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "pyramid" in out and "simple feature pyramid" in out
    assert "(1, 192, 40, 60)" in out and "(1, 384, 10, 15)" in out  # strides 8 and 32 from the stride-16 map
    assert "(1, 80, 3, 4)" in out  # the head ran on P7


def test_cli_lists_models_with_strides_and_pyramid(monkeypatch):
    from typer.testing import CliRunner

    from fcos_cli import cli

    monkeypatch.setattr(cli.console, "width", 200)  # one table row per line
    result = CliRunner().invoke(app, ["backbones", "test_*", "--all"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ test_")}
    assert "simple pyramid" in lines["test_vit"] and "16,16,16" in lines["test_vit"]
    assert "2,4,8,16,32" in lines["test_resnet"] and "32,32,48,192,96" in lines["test_resnet"]
    assert "NHWC" in lines["test_mambaout"]
    assert "no:" in lines["test_vit_relpos"]
    limited = CliRunner().invoke(app, ["backbones", "test_*", "--limit", "2"])
    assert limited.exit_code == 0 and "first 2 of" in limited.output


def test_cli_backbones_errors():
    from typer.testing import CliRunner

    bad = CliRunner().invoke(app, ["backbones", "--check", "vit_smal_patch16_224"])
    assert bad.exit_code == 2 and "vit_small_patch16_224" in bad.output
    none = CliRunner().invoke(app, ["backbones", "no_such_model_*"])
    assert none.exit_code == 2
    size = CliRunner().invoke(app, ["backbones", "--check", "test_vit", "--img-size", "1,2,3"])
    assert size.exit_code == 2


def test_cli_train_backbone_options_reach_config_and_model(monkeypatch, tmp_path):
    """The options land in BackboneConfig (so the weights record them) and the model is built with them;
    training prints the load report and what was frozen. The loop itself is replaced: its tests are elsewhere."""
    from typer.testing import CliRunner

    import fcos_cli.engine.train as engine_train

    seen = {}

    def fake_train(cfg, train_index, val_index, run_dir, device, model=None, **kwargs):
        seen.update(cfg=cfg, model=model)
        return engine_train.TrainResult(run_dir, run_dir / "last.safetensors", run_dir / "best.safetensors",
                                        None, 0.0, 0.0)

    monkeypatch.setattr(engine_train, "train", fake_train)
    weights = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(weights))
    args = ["train", "--backbone", "test_resnet", "--fpn-channels", "32", "--epochs", "1", "--workers", "0",
            "--project", str(tmp_path / "runs"), "--pretrained-file", str(weights), "--freeze-stages", "1",
            "--freeze-bn", "--backbone-lr-mult", "0.1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    bc = seen["cfg"].model.backbone
    assert (bc.freeze_stages, bc.freeze_bn, bc.lr_mult, bc.pretrained_file) == (1, True, 0.1, str(weights))
    model = seen["model"]
    assert model.backbone.lr_mult == 0.1
    assert not any(p.requires_grad for n, p in model.backbone.body.named_parameters() if n.startswith("layer1."))
    assert f"pretrained file {weights} (75/75 tensors)" in result.output and "stem, layer1" in result.output

    bad = CliRunner().invoke(app, [*args[:-1], "0"])
    assert bad.exit_code == 2 and "--backbone-lr-mult" in bad.output


@pytest.mark.parametrize("backbone_cfg", [BackboneConfig(name="test_vit", freeze_stages=1, lr_mult=0.5),
                                          BackboneConfig(name="test_resnet", freeze_bn=True, freeze_stages=0)],
                         ids=["vit-pyramid", "resnet-frozen-bn"])
def test_weights_round_trip_with_pyramid_and_frozen_bn(tmp_path, backbone_cfg):
    from fcos_cli import checkpoint

    torch.manual_seed(0)
    cfg = preset("improved")
    cfg.model.num_classes, cfg.model.fpn.out_channels, cfg.model.head.num_groups = 2, 32, 8
    cfg.model.backbone = backbone_cfg
    model = build_model(cfg.model).eval()
    path = checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, ["a", "b"]))
    loaded, loaded_cfg, _ = checkpoint.load(path)
    assert loaded_cfg.model.backbone == backbone_cfg
    images = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(model(images), loaded(images), strict=True):
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y)
