"""Every preset builds, trains one step and detects (on a CNN and on a ViT); FPN and head units.

One model per timm family is in test_families.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fcos_cli.config import preset
from fcos_cli.errors import UserError
from fcos_cli.model import FPN, FCOSHead, build_model
from fcos_cli.pipeline import detections_for, loss_for

B, H, W = 2, 100, 140  # not multiples of 32: the model pads to 128 x 160 itself
PADDED = (128, 160)


def _config(preset_name: str, backbone: str, num_groups: int):
    cfg = preset(preset_name)
    cfg.model.num_classes = 3
    cfg.model.backbone.name = backbone
    cfg.model.fpn.out_channels = 32
    cfg.model.head.num_groups = num_groups
    cfg.post.score_thresh = 0.0
    return cfg


def _ground_truth():
    boxes = [torch.tensor([[10.0, 12.0, 40.0, 50.0], [50.0, 20.0, 130.0, 95.0]]),
             torch.tensor([[5.0, 5.0, 25.0, 20.0], [30.0, 30.0, 100.0, 90.0], [100.0, 60.0, 135.0, 98.0]])]
    labels = [torch.tensor([0, 2]), torch.tensor([1, 1, 0])]
    return boxes, labels


def _convs(tower: nn.Module) -> list[nn.Conv2d]:
    return [m for m in tower.modules() if isinstance(m, nn.Conv2d)]


CASES = [
    ("improved", "test_resnet", 8),
    ("improved", "test_convnext", 32),
    ("paper", "test_resnet", 8),
    ("torchvision", "test_resnet", 32),
    ("paper", "test_vit", 8),  # simple feature pyramid, exp box activation
    ("torchvision", "test_vit", 32),
]


@pytest.mark.parametrize(("preset_name", "backbone", "num_groups"), CASES,
                         ids=[f"{p}-{b}-gn{g}" for p, b, g in CASES])
def test_build_train_step_and_detect(preset_name, backbone, num_groups):
    torch.manual_seed(0)
    cfg = _config(preset_name, backbone, num_groups)
    model = build_model(cfg.model)
    assert model.strides == [8, 16, 32, 64, 128]
    images = torch.rand(B, 3, H, W)
    gt_boxes, gt_labels = _ground_truth()

    model.train()
    outputs = model(images)
    # Per level (B, C, ceil(padded / stride)): the 100 x 140 input was padded to 128 x 160.
    for level, stride in enumerate(model.strides):
        size = (math.ceil(PADDED[0] / stride), math.ceil(PADDED[1] / stride))
        assert tuple(outputs.cls_logits[level].shape) == (B, 3, *size)
        assert tuple(outputs.box_regression[level].shape) == (B, 4, *size)
        assert tuple(outputs.centerness[level].shape) == (B, 1, *size)

    losses = loss_for(outputs, model.strides, gt_boxes, gt_labels, cfg)
    for name in ("cls", "box", "centerness", "total"):
        value = getattr(losses, name)
        assert value.ndim == 0 and torch.isfinite(value), (name, value)
    assert losses.total.item() > 0
    losses.total.backward()

    head = model.head
    checked = {"cls_logits": head.cls_logits.weight, "box_regression": head.box_regression.weight,
               "centerness": head.centerness.weight,
               "cls_tower[0]": _convs(head.cls_tower)[0].weight,
               "box_tower[0]": _convs(head.box_tower)[0].weight}
    for name, param in checked.items():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())

    model.eval()
    with torch.no_grad():
        detections = detections_for(model(images), model.strides, [(H, W)] * B, cfg)
    assert len(detections) == B
    for det in detections:
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
        assert boxes.shape[0] > 0
        assert boxes.shape == (scores.shape[0], 4) and labels.shape == scores.shape
        assert torch.isfinite(boxes).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
        assert ((labels >= 0) & (labels < 3)).all()
        assert (scores > 0).all() and (scores <= 1).all()


def test_patch14_vit_fails_at_build():
    """Stride 14 cannot give 8/16/32 by 2x steps: a UserError naming the stride, not a shape error later."""
    cfg = _config("improved", "eva02_tiny_patch14_224", 8)
    with pytest.raises(UserError) as info:
        build_model(cfg.model)
    assert "stride-14" in str(info.value)


# ---- FPN ---------------------------------------------------------------------------------------------


def _c345(batch: int = 2):
    torch.manual_seed(0)
    # test_resnet-like channels (not monotonic), maps of a 128 x 160 image at strides 8/16/32.
    return [torch.randn(batch, 48, 16, 20), torch.randn(batch, 192, 8, 10), torch.randn(batch, 96, 4, 5)]


def test_fpn_outputs_three_inputs_plus_two_extras():
    fpn = FPN([48, 192, 96], out_channels=32, num_extra=2)
    outputs = fpn(_c345())
    assert len(outputs) == 5
    for out, stride in zip(outputs, (8, 16, 32, 64, 128), strict=True):
        assert tuple(out.shape) == (2, 32, math.ceil(128 / stride), math.ceil(160 / stride))
    assert [tuple(o.shape[-2:]) for o in outputs] == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]


def test_fpn_extra_from_p5_and_c5():
    p5_fpn = FPN([48, 192, 96], out_channels=32, num_extra=2, extra_from="p5")
    c5_fpn = FPN([48, 192, 96], out_channels=32, num_extra=2, extra_from="c5")
    assert p5_fpn.extra[0].in_channels == 32
    assert c5_fpn.extra[0].in_channels == 96  # C5's channels
    assert c5_fpn.extra[1].in_channels == 32
    features = _c345()
    with torch.no_grad():
        c5_out = c5_fpn(features)
        p5_out = p5_fpn(features)
        # P6 is the first extra conv applied to C5 (c5) or to P5 (p5); P7 is conv(relu(P6)).
        torch.testing.assert_close(c5_out[3], c5_fpn.extra[0](features[-1]))
        torch.testing.assert_close(p5_out[3], p5_fpn.extra[0](p5_out[2]))
        torch.testing.assert_close(c5_out[4], c5_fpn.extra[1](torch.relu(c5_out[3])))
    assert tuple(c5_out[3].shape) == (2, 32, 2, 3)


def test_fpn_top_down_reaches_finer_levels():
    fpn = FPN([48, 192, 96], out_channels=32, num_extra=0)
    features = _c345()
    with torch.no_grad():
        before = fpn(features)
        changed = [features[0], features[1], features[2] + 1.0]
        after = fpn(changed)
    assert len(before) == 3
    assert not torch.allclose(before[0], after[0])  # C5 reaches P3 through the top-down path


# ---- head --------------------------------------------------------------------------------------------


def _levels(channels: int = 32, batch: int = 2):
    torch.manual_seed(0)
    return [torch.randn(batch, channels, h, w) for h, w in [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]]


def test_head_output_shapes_per_level():
    head = FCOSHead(32, num_classes=3, num_levels=5, num_groups=8)
    features = _levels()
    out = head(features)
    assert len(out.cls_logits) == len(out.box_regression) == len(out.centerness) == 5
    for f, cls, box, ctr in zip(features, out.cls_logits, out.box_regression, out.centerness, strict=True):
        h, w = f.shape[-2:]
        assert tuple(cls.shape) == (2, 3, h, w)
        assert tuple(box.shape) == (2, 4, h, w)
        assert tuple(ctr.shape) == (2, 1, h, w)
        assert (box >= 0).all()  # relu


def test_head_cls_bias_prior():
    head = FCOSHead(32, num_classes=5, num_levels=5, num_groups=8, prior_prob=0.01)
    torch.testing.assert_close(head.cls_logits.bias.detach(), torch.full((5,), -math.log(99.0)))
    # An untrained head predicts probability ~0.01 for every class.
    with torch.no_grad():
        probs = head(_levels()).cls_logits[0].sigmoid()
    assert abs(probs.mean().item() - 0.01) < 1e-3
    assert ((probs > 0.005) & (probs < 0.02)).all()


@pytest.mark.parametrize("activation", ["exp", "relu"])
def test_head_box_activation(activation):
    head = FCOSHead(32, num_classes=3, num_levels=5, num_groups=8, box_activation=activation)
    with torch.no_grad():
        head.box_regression.bias.fill_(-5.0)  # raw distances well below zero
        head.box_regression.weight.zero_()
        boxes = head(_levels()).box_regression
    for box in boxes:
        if activation == "exp":
            assert (box > 0).all()
            torch.testing.assert_close(box, torch.full_like(box, math.exp(-5.0)))
        else:
            assert (box == 0).all()


def test_head_learnable_scale_switch():
    with_scale = FCOSHead(32, num_classes=3, num_levels=5, num_groups=8, learnable_scale=True)
    without = FCOSHead(32, num_classes=3, num_levels=5, num_groups=8, learnable_scale=False)
    assert len(with_scale.scales) == 5
    assert any("scales" in name for name, _ in with_scale.named_parameters())
    assert getattr(without, "scales", None) is None
    assert not any("scales" in name for name, _ in without.named_parameters())
    # A scale of 2 doubles the pre-activation distances of its level only.
    features = _levels()
    with torch.no_grad():
        base = with_scale(features).box_regression
        with_scale.scales[1].scale.fill_(2.0)
        scaled = with_scale(features).box_regression
    torch.testing.assert_close(scaled[0], base[0])
    torch.testing.assert_close(scaled[1], 2 * base[1])


@pytest.mark.parametrize("on_reg", [True, False])
def test_head_centerness_branch(on_reg):
    torch.manual_seed(0)
    head = FCOSHead(32, num_classes=3, num_levels=5, num_groups=8, centerness_on_reg=on_reg)
    with torch.no_grad():
        head.centerness.weight.normal_(std=1.0)  # make the centerness conv sensitive to its input
    features = _levels()
    with torch.no_grad():
        before = head(features).centerness
        last_box_conv = _convs(head.box_tower)[-1]
        last_box_conv.weight.zero_()
        last_box_conv.bias.zero_()
        after = head(features).centerness
    changed = any(not torch.allclose(b, a) for b, a in zip(before, after, strict=True))
    assert changed == on_reg
