"""`fcos import-weights`: torchvision's detections reproduced; mmdet and original-FCOS checkpoints mapped tensor
for tensor and checked against references written from their sources' forward code; bad files refused."""

from __future__ import annotations

import argparse
import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d
from typer.testing import CliRunner

import fcos_cli
from fcos_cli import checkpoint
from fcos_cli.cli import app
from fcos_cli.compat import COCO_CATEGORY_IDS, COCO_NAMES
from fcos_cli.config import from_dict, preset, to_dict
from fcos_cli.model import build_model

CAFFE_MEAN_BGR = torch.tensor([102.9801, 115.9465, 122.7717])
R50_BLOCKS = (3, 4, 6, 3)


def _import(path: Path, *args: str):
    return CliRunner().invoke(app, ["import-weights", str(path), *args])


# --- fake checkpoints: every tensor name and shape of a real R-50 FCOS, from the sources' module code ---------

def _bn(prefix: str, n: int, frozen: bool) -> dict[str, tuple[int, ...]]:
    # maskrcnn-benchmark's FrozenBatchNorm2d: four buffers; torch BatchNorm2d (mmdet) adds num_batches_tracked.
    names = ("weight", "bias", "running_mean", "running_var") + (() if frozen else ("num_batches_tracked",))
    return {f"{prefix}.{name}": (() if name == "num_batches_tracked" else (n,)) for name in names}


def _resnet50(stem: str, body: str, frozen: bool) -> dict[str, tuple[int, ...]]:
    """mmdet backbones/resnet.py (stem at `backbone.conv1`) or maskrcnn-benchmark resnet.py (`backbone.body.stem`)."""
    shapes = {f"{stem}conv1.weight": (64, 3, 7, 7), **_bn(f"{stem}bn1", 64, frozen)}
    in_channels = 64
    for layer, blocks in enumerate(R50_BLOCKS, 1):
        width = 64 * 2 ** (layer - 1)
        for block in range(blocks):
            p = f"{body}layer{layer}.{block}"
            shapes.update({f"{p}.conv1.weight": (width, in_channels, 1, 1), **_bn(f"{p}.bn1", width, frozen),
                           f"{p}.conv2.weight": (width, width, 3, 3), **_bn(f"{p}.bn2", width, frozen),
                           f"{p}.conv3.weight": (4 * width, width, 1, 1), **_bn(f"{p}.bn3", 4 * width, frozen)})
            if block == 0:
                shapes.update({f"{p}.downsample.0.weight": (4 * width, in_channels, 1, 1),
                               **_bn(f"{p}.downsample.1", 4 * width, frozen)})
            in_channels = 4 * width
    return shapes


def _conv(name: str, out: int, inp: int, k: int, bias: bool = True) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out, inp, k, k), **({f"{name}.bias": (out,)} if bias else {})}


# Where each part lives in each source; {i} level/conv index, {j} = i + 2, {c} = 3i, {g} = 3i + 1.
NAMES = {
    "mmdet": dict(lateral="neck.lateral_convs.{i}.conv", output="neck.fpn_convs.{i}.conv", p6="neck.fpn_convs.3.conv",
                  p7="neck.fpn_convs.4.conv", cls_conv="bbox_head.cls_convs.{i}.conv", cls_gn="bbox_head.cls_convs.{i}.gn",
                  reg_conv="bbox_head.reg_convs.{i}.conv", reg_gn="bbox_head.reg_convs.{i}.gn", cls="bbox_head.conv_cls",
                  reg="bbox_head.conv_reg", ctr="bbox_head.conv_centerness", scale="bbox_head.scales.{i}.scale",
                  stem="backbone.", body="backbone."),
    "fcos-original": dict(lateral="backbone.fpn.fpn_inner{j}", output="backbone.fpn.fpn_layer{j}",
                          p6="backbone.fpn.top_blocks.p6", p7="backbone.fpn.top_blocks.p7",
                          cls_conv="rpn.head.cls_tower.{c}", cls_gn="rpn.head.cls_tower.{g}",
                          reg_conv="rpn.head.bbox_tower.{c}", reg_gn="rpn.head.bbox_tower.{g}", cls="rpn.head.cls_logits",
                          reg="rpn.head.bbox_pred", ctr="rpn.head.centerness", scale="rpn.head.scales.{i}.scale",
                          stem="backbone.body.stem.", body="backbone.body."),
}


def _name(source: str, part: str, i: int = 0) -> str:
    return NAMES[source][part].format(i=i, j=i + 2, c=3 * i, g=3 * i + 1)


def fake_shapes(source: str, tower_bias: bool = True) -> dict[str, tuple[int, ...]]:
    """Every tensor of an R-50 FCOS COCO checkpoint: mmdet (ConvModule towers, bias only with conv_bias=True;
    mmcv Scale is 0-d) or the FCOS repo (towers Sequential(conv, GN, ReLU) x 4; its Scale is a (1,) tensor)."""
    n = lambda part, i=0: _name(source, part, i)  # noqa: E731
    shapes = _resnet50(NAMES[source]["stem"], NAMES[source]["body"], frozen=source == "fcos-original")
    for i, c in enumerate((512, 1024, 2048)):
        shapes.update({**_conv(n("lateral", i), 256, c, 1), **_conv(n("output", i), 256, 256, 3)})
    shapes.update({**_conv(n("p6"), 256, 256, 3), **_conv(n("p7"), 256, 256, 3)})
    for i in range(4):
        for tower in ("cls", "reg"):
            shapes.update({**_conv(n(f"{tower}_conv", i), 256, 256, 3, bias=tower_bias),
                           f"{n(f'{tower}_gn', i)}.weight": (256,), f"{n(f'{tower}_gn', i)}.bias": (256,)})
    shapes.update({**_conv(n("cls"), 80, 256, 3), **_conv(n("reg"), 4, 256, 3), **_conv(n("ctr"), 1, 256, 3)})
    shapes.update({n("scale", i): (() if source == "mmdet" else (1,)) for i in range(5)})
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0, small_var: bool = False) -> dict[str, Tensor]:
    """Random values that keep a 50-layer net finite: He-scaled convs, BN near identity, head convs std 0.01.

    `small_var`: running variances of 0.001-0.01 (weights scaled to match), where BatchNorm's eps of 1e-5
    changes the features by ~0.1% per layer: the comparison then sees whether eps was accounted for.
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".scale"):
            state[key] = 1 + 0.2 * torch.rand(shape, generator=g)
        elif len(shape) == 4:
            std = 0.01 if "head" in key else math.sqrt(1 / math.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=g) * std
        elif key.endswith("weight"):  # BN / GN scale
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:  # biases, running means
            state[key] = 0.1 * torch.randn(shape, generator=g)
    if small_var:
        for key in [k for k in state if k.endswith("running_var")]:
            state[key] = 0.001 + 0.009 * torch.rand(state[key].shape, generator=g)
            state[key.removesuffix("running_var") + "weight"] *= state[key].sqrt()
    cls_bias = next(k for k in state if k.endswith(("conv_cls.bias", "cls_logits.bias")))
    state[cls_bias] -= math.log(99)  # the focal-loss prior, as trained heads keep roughly
    return state


# --- references written from the sources' forward code, independent of our model ---------------------------

def reference_backbone(state: dict[str, Tensor], source: str) -> torch.nn.Module:
    """torchvision's resnet50 with the caffe stride on conv1 of each downsampling block, and the source's BN:
    FrozenBatchNorm2d without eps (maskrcnn-benchmark) or BatchNorm's eps 1e-5 (mmdet)."""
    eps = 0.0 if source == "fcos-original" else 1e-5
    net = torchvision.models.resnet50(norm_layer=partial(FrozenBatchNorm2d, eps=eps))
    stem, body = NAMES[source]["stem"], NAMES[source]["body"]
    renamed = {k[len(stem):] if k.startswith(stem) and k[len(stem):].split(".")[0] in ("conv1", "bn1")
               else k[len(body):]: v for k, v in state.items() if k.startswith((stem, body))}
    missing, unexpected = net.load_state_dict(renamed, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    for layer in (net.layer2, net.layer3, net.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    return IntermediateLayerGetter(net, {"layer2": "c3", "layer3": "c4", "layer4": "c5"}).eval()


def reference_fcos(state: dict[str, Tensor], source: str, images: Tensor, improved: bool) -> list[list[Tensor]]:
    """The source's FCOS on 0-1 RGB images: caffe input, FPN (P6 from P5, ReLU before P7), FCOS head."""
    n = partial(_name, source)
    conv = lambda x, name, **kw: F.conv2d(x, state[f"{name}.weight"], state.get(f"{name}.bias"), **kw)  # noqa: E731
    x = images.flip(1) * 255 - CAFFE_MEAN_BGR.view(1, 3, 1, 1)  # BGR 0-255 minus the mean, std 1
    with torch.no_grad():
        feats = list(reference_backbone(state, source)(x).values())
        inner = conv(feats[2], n("lateral", 2))
        outs = [conv(inner, n("output", 2), padding=1)]
        for i in (1, 0):
            inner = conv(feats[i], n("lateral", i)) + F.interpolate(inner, size=feats[i].shape[-2:], mode="nearest")
            outs.insert(0, conv(inner, n("output", i), padding=1))
        outs.append(conv(outs[-1], n("p6"), stride=2, padding=1))
        outs.append(conv(F.relu(outs[-1]), n("p7"), stride=2, padding=1))
        results: list[list[Tensor]] = [[], [], []]
        for level, feature in enumerate(outs):
            cls_feat = reg_feat = feature
            for i in range(4):
                gn = lambda t, tower, i=i: F.group_norm(t, 32, state[f"{n(f'{tower}_gn', i)}.weight"],  # noqa: E731
                                                   state[f"{n(f'{tower}_gn', i)}.bias"])
                cls_feat = F.relu(gn(conv(cls_feat, n("cls_conv", i), padding=1), "cls"))
                reg_feat = F.relu(gn(conv(reg_feat, n("reg_conv", i), padding=1), "reg"))
            box = conv(reg_feat, n("reg"), padding=1) * state[n("scale", level)]
            stride = 2 ** (level + 3)
            # mmdet: relu then x stride at test; the FCOS repo: x stride without the relu (compared clamped below).
            box = box.clamp(min=0) * stride if improved else box.exp()
            results[0].append(conv(cls_feat, n("cls"), padding=1))
            results[1].append(box)
            results[2].append(conv(reg_feat if improved else cls_feat, n("ctr"), padding=1))
    return results


def _check_against_reference(weights: Path, state: dict[str, Tensor], source: str, improved: bool) -> None:
    model, cfg, _ = fcos_cli.load(weights)
    torch.manual_seed(0)
    images = torch.rand(1, 3, 160, 224)  # sides multiple of 32: no padding question
    with torch.no_grad():
        ours = model(images)
    ref = reference_fcos(state, source, images, improved)
    for level, stride in enumerate(model.strides):
        box = ours.box_regression[level] * (stride if cfg.model.head.norm_reg_targets else 1)
        torch.testing.assert_close(ours.cls_logits[level], ref[0][level], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(box, ref[1][level], rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(ours.centerness[level], ref[2][level], rtol=1e-4, atol=1e-4)


def _predict_runs(weights: Path) -> None:
    model, cfg, names = fcos_cli.load(weights)
    cfg.data.img_size, cfg.post.score_thresh = 256, 0.0
    image = np.random.default_rng(0).integers(0, 256, (192, 256, 3), dtype=np.uint8)
    det = fcos_cli.predict(model, cfg, [image])[0]
    assert len(det["boxes"]) == cfg.post.max_detections
    assert torch.isfinite(det["boxes"]).all() and int(det["labels"].max()) < len(names)


def _summary(output: str) -> str:
    return next(line for line in output.splitlines() if "tensors used" in line)


# --- 1. torchvision: fcos_cli.predict equals torchvision's own detections ----------------------------------

def test_torchvision_predictions_equal_torchvisions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None).eval()
    unused = [i for i in range(91) if i not in COCO_CATEGORY_IDS]
    with torch.no_grad():  # COCO never labels these 11 slots: trained COCO_V1 keeps them far below any score
        tv.head.classification_head.cls_logits.bias[unused] = -30.0
    # COCO_V1 is built with FrozenBatchNorm2d: its file has no num_batches_tracked.
    state = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "fcos_resnet50_fpn_coco.pth")
    result = _import(tmp_path / "fcos_resnet50_fpn_coco.pth", "--from", "torchvision")
    assert result.exit_code == 0, result.output
    assert f"{len(state)} tensors used, 53 filled with exact constants, 0 left over, 0 unfilled" in _summary(result.output)
    weights = tmp_path / "fcos_resnet50_fpn_coco.safetensors"
    model, cfg, names = fcos_cli.load(weights)
    ids = checkpoint.read_info(weights).category_ids
    assert names == COCO_NAMES and ids == COCO_CATEGORY_IDS and cfg.preset == "torchvision"

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (320, 320, 3), dtype=np.uint8), rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)]
    cfg.data.img_size, cfg.data.max_size, cfg.post.score_thresh = 320, 320, 0.0  # torchvision's rule at 320/320
    ours = fcos_cli.predict(model, cfg, images)
    tv.score_thresh = 0.0
    tv.transform.min_size, tv.transform.max_size = (320,), 320  # scale min(320/short, 320/long) = 1: no resize
    with torch.no_grad():
        theirs = tv([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])
    for our, their in zip(ours, theirs, strict=True):
        assert len(our["boxes"]) >= 100
        torch.testing.assert_close(our["boxes"], their["boxes"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(our["scores"], their["scores"], rtol=1e-4, atol=1e-4)
        assert [ids[k] for k in our["labels"].tolist()] == their["labels"].tolist()


class _Seen(Exception):
    """Raised once the input is known: the size is the test, not the forward."""


def test_torchvision_weights_predict_at_torchvisions_size_by_default(tmp_path: Path, monkeypatch) -> None:
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None).eval()
    torch.save(tv.state_dict(), tmp_path / "fcos_resnet50_fpn_coco.pth")
    assert _import(tmp_path / "fcos_resnet50_fpn_coco.pth", "--from", "torchvision").exit_code == 0
    model, cfg, _ = fcos_cli.load(tmp_path / "fcos_resnet50_fpn_coco.safetensors")
    assert (cfg.data.img_size, cfg.data.max_size) == (800, 1333)
    result = CliRunner().invoke(app, ["eval", "-w", str(tmp_path / "fcos_resnet50_fpn_coco.safetensors"),
                                      "--project", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "record no data" in result.output  # not the demo data, with other classes
    seen = []

    def detect(model, cfg, images, sizes, amp=False):  # what the model is given: the batch and its images' sizes
        seen.append((tuple(images.shape[-2:]), sizes[0]))
        raise _Seen

    monkeypatch.setattr("fcos_cli.engine.predict.detect", detect)
    for height, width in [(480, 640), (600, 333), (1001, 3000), (517, 731)]:
        expected = tuple(tv.transform([torch.zeros(3, height, width)])[0].image_sizes[0])
        with pytest.raises(_Seen):
            fcos_cli.predict(model, cfg, [np.zeros((height, width, 3), np.uint8)])
        padded = tuple(-(-side // cfg.model.size_divisor) * cfg.model.size_divisor for side in expected)
        assert seen[-1] == (padded, expected), (height, width)
    assert seen[0] == ((800, 1088), (800, 1066))  # torchvision truncates 1066.7; padded to a multiple of 32


def test_missing_tensor_is_an_error_unless_allow_partial(tmp_path: Path) -> None:
    state = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    del state["head.regression_head.bbox_ctrness.bias"]
    state["head.extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "partial.pth")
    result = _import(tmp_path / "partial.pth", "--from", "torchvision")
    assert result.exit_code == 2
    assert "unfilled  head.centerness.bias" in result.output and "left over head.extra.weight" in result.output
    assert "nothing written" in result.stderr and not (tmp_path / "partial.safetensors").exists()
    result = _import(tmp_path / "partial.pth", "--from", "torchvision", "--allow-partial", "--output",
                     str(tmp_path / "p.safetensors"))
    assert result.exit_code == 0, result.output
    assert checkpoint.read_info(tmp_path / "p.safetensors").imported_from["complete"] is False


# --- 2. mmdetection and the original FCOS: every tensor mapped, numerics against their forward code ---------

MMDET_PAPER_CONFIG = "model = dict(type='FCOS', bbox_head=dict(type='FCOSHead', num_classes=80, norm_cfg=dict(type='GN')))"
MMDET_TRICKS_CONFIG = ("model = dict(type='FCOS', bbox_head=dict(type='FCOSHead', num_classes=80, norm_on_bbox=True, "
                       "centerness_on_reg=True, dcn_on_last_conv=False, center_sampling=True, conv_bias=True))")


@pytest.mark.parametrize("name,config,tower_bias,improved", [
    ("fcos_r50_caffe_fpn_gn-head_1x_coco.pth", MMDET_PAPER_CONFIG, False, False),
    ("fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.pth", MMDET_TRICKS_CONFIG, True, True),
], ids=["paper", "tricks"])
def test_mmdet_checkpoint(tmp_path: Path, name: str, config: str, tower_bias: bool, improved: bool) -> None:
    shapes = fake_shapes("mmdet", tower_bias=tower_bias)
    state = random_state(shapes)
    meta = {"mmdet_version": "2.25.0", "CLASSES": tuple(COCO_NAMES), "config": config, "epoch": 12}
    torch.save({"meta": meta, "state_dict": state}, tmp_path / name)
    result = _import(tmp_path / name, "--from", "mmdet")
    assert result.exit_code == 0, result.output
    filled = 8 if not tower_bias else 0  # the eight bias-free tower convs get exact zero biases
    assert f"{len(shapes)} tensors used, {filled} filled with exact constants, 0 left over, 0 unfilled" in _summary(result.output)
    assert f"preset {'improved' if improved else 'paper'} (the mmdet config saved in the checkpoint)" in result.output
    weights = (tmp_path / name).with_suffix(".safetensors")
    _, cfg, names = fcos_cli.load(weights)
    assert names == COCO_NAMES and cfg.model.channel_order == "bgr" and cfg.model.stride_in_1x1
    assert cfg.post.score_rule == "product" and cfg.post.nms_iou == 0.5
    assert cfg.model.head.centerness_on_reg is improved
    _check_against_reference(weights, state, "mmdet", improved)
    _predict_runs(weights)


@pytest.mark.parametrize("name,improved", [("FCOS_R_50_FPN_1x.pth", False), ("FCOS_imprv_R_50_FPN_1x.pth", True)],
                         ids=["paper", "imprv"])
def test_fcos_original_checkpoint(tmp_path: Path, name: str, improved: bool) -> None:
    shapes = fake_shapes("fcos-original")
    state = random_state(shapes, seed=1, small_var=True)
    # maskrcnn-benchmark's Checkpointer: {"model": DistributedDataParallel state dict, "iteration": ...}
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "iteration": 90000}, tmp_path / name)
    result = _import(tmp_path / name, "--from", "fcos-original")
    assert result.exit_code == 0, result.output
    # 53 BatchNorm counters are ours alone; everything else comes from the file.
    assert f"{len(shapes)} tensors used, 53 filled with exact constants, 0 left over, 0 unfilled" in _summary(result.output)
    assert "FrozenBatchNorm" in result.output
    weights = (tmp_path / name).with_suffix(".safetensors")
    _, cfg, names = fcos_cli.load(weights)
    assert cfg.preset == ("improved" if improved else "paper") and names == COCO_NAMES
    assert cfg.post.score_rule == "sqrt" and cfg.post.nms_iou == 0.6
    _check_against_reference(weights, state, "fcos-original", improved)
    _predict_runs(weights)


def test_caffe_backbone_needs_the_stride_move_and_bgr(tmp_path: Path) -> None:
    """The reference comparison can fail: without stride_in_1x1 or with RGB input the features differ."""
    state = random_state(fake_shapes("fcos-original"), seed=2, small_var=True)
    torch.save(state, tmp_path / "FCOS_R_50_FPN_1x.pth")
    assert _import(tmp_path / "FCOS_R_50_FPN_1x.pth", "--from", "fcos-original").exit_code == 0
    model, cfg, _ = fcos_cli.load(tmp_path / "FCOS_R_50_FPN_1x.safetensors")
    images = torch.rand(1, 3, 128, 160)
    captured: list[list[Tensor]] = []
    model.backbone.register_forward_hook(lambda _m, _i, out: captured.append(out))
    ref = list(reference_backbone(state, "fcos-original")(images.flip(1) * 255 - CAFFE_MEAN_BGR.view(1, 3, 1, 1)).values())
    with torch.no_grad():
        model(images)
        for ours, theirs in zip(captured[0], ref, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))
        cfg.model.stride_in_1x1 = False
        timm_strides = build_model(cfg.model).eval()
        timm_strides.load_state_dict(model.state_dict())
        timm_strides.backbone.register_forward_hook(lambda _m, _i, out: captured.append(out))
        timm_strides(images)
        assert not torch.allclose(captured[1][0], ref[0], rtol=1e-2, atol=1e-2 * float(ref[0].abs().max()))
        model.bgr = False
        model(images)
        assert not torch.allclose(captured[2][0], ref[0], rtol=1e-2, atol=1e-2 * float(ref[0].abs().max()))


def test_variant_option_overrides_the_file_name(tmp_path: Path) -> None:
    torch.save(random_state(fake_shapes("fcos-original")), tmp_path / "FCOS_imprv_R_50_FPN_1x.pth")
    result = _import(tmp_path / "FCOS_imprv_R_50_FPN_1x.pth", "--from", "fcos-original", "--variant", "paper",
                     "--output", str(tmp_path / "w.safetensors"))
    assert result.exit_code == 0 and "preset paper (--variant)" in result.output
    assert fcos_cli.load(tmp_path / "w.safetensors")[1].model.head.centerness_on_reg is False


def test_bgr_model_exports_to_onnx(tmp_path: Path) -> None:
    """Caffe normalisation lives in FCOS.forward, so the ONNX graph has it; onnxruntime agrees with PyTorch."""
    from fcos_cli.export import check_onnx, export_onnx

    cfg = preset("improved")
    m = cfg.model
    m.backbone.name, m.fpn.out_channels, m.head.num_groups, m.head.num_convs, m.num_classes = "test_resnet", 32, 8, 2, 3
    m.pixel_mean, m.pixel_std, m.channel_order = (102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0), "bgr"
    cfg.post.score_thresh = 0.0
    torch.manual_seed(0)
    model = build_model(m).eval()
    out = export_onnx(model, cfg, ["a", "b", "c"], tmp_path / "bgr.onnx", torch.rand(1, 3, 128, 128))
    cfg.data.img_size = 128
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    check = check_onnx(out, model, cfg, [image], conf=0.0)
    assert check.num_detections >= 10 and check.box < 1e-2 and check.score < 1e-4 and check.raw < 1e-4


def test_old_configs_without_the_new_fields_load() -> None:
    data = to_dict(preset("improved"))
    for key in ("pixel_mean", "pixel_std", "channel_order", "stride_in_1x1"):
        del data["model"][key]
    cfg = from_dict(json.loads(json.dumps(data)))
    assert cfg.model.pixel_mean is None and cfg.model.channel_order == "rgb" and not cfg.model.stride_in_1x1
    data["model"]["pixel_mean"] = [1.0, 2.0, 3.0]
    assert from_dict(data).model.pixel_mean == (1.0, 2.0, 3.0)


# --- 3. files it must refuse in one line, exit code 2 -----------------------------------------------------

def _pickled_namespace(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.01)}, path)


def _resnet18_classifier(path: Path) -> None:
    torch.save(torchvision.models.resnet18().state_dict(), path)


def _truncated(path: Path) -> None:
    torch.save(torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("make,reason", [
    (_pickled_namespace, "holds Python objects beyond tensors (it pickles argparse.Namespace)"),
    (_resnet18_classifier, "is not an FCOS checkpoint from torchvision"),
    (_truncated, "the file may be truncated"),
], ids=["needs-unpickling", "other-architecture", "truncated"])
def test_bad_files_fail_in_one_line(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "bad.pth"
    make(path)
    result = _import(path, "--from", "torchvision")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and reason in lines[0]
    assert "Traceback" not in result.output and not path.with_suffix(".safetensors").exists()


def test_unknown_source_is_a_bad_parameter(tmp_path: Path) -> None:
    _resnet18_classifier(tmp_path / "r.pth")
    result = _import(tmp_path / "r.pth", "--from", "detectron2")
    assert result.exit_code == 2 and "'torchvision', 'mmdet', 'fcos-original'" in result.output
