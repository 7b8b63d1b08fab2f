"""FCOS losses on hand-made head outputs: -log IoU, focal normalisation, center-ness weighting, strides."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from fcos_cli.head_outputs import HeadOutputs, flatten_levels, unflatten_levels
from fcos_cli.losses import fcos_loss, iou_loss
from fcos_cli.targets import Points, assign_targets, make_points

K = 3
LN2 = math.log(2)


def _head_outputs(points: Points, cls: Tensor, box: Tensor, ctr: Tensor) -> HeadOutputs:
    return unflatten_levels(cls, box, ctr, list(points.sizes))


def _targets(points: Points, boxes: list[list[list[float]]], labels: list[list[int]], size_ranges=()):
    return assign_targets(points, [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes],
                          [torch.tensor(lb, dtype=torch.long) for lb in labels], K, size_ranges=size_ranges)


def test_head_outputs_helper_inverts_flatten_levels() -> None:
    points = make_points(((8, 8), (4, 4)), (8, 16))
    cls, box, ctr = torch.randn(2, 80, K), torch.rand(2, 80, 4), torch.randn(2, 80)
    outputs = _head_outputs(points, cls, box, ctr)
    assert outputs.cls_logits[1].shape == (2, K, 4, 4)
    assert outputs.box_regression[0][1, :, 0, 1].tolist() == box[1, 1].tolist()  # row 0, col 1 = point 1
    for got, want in zip(flatten_levels(outputs), (cls, box, ctr), strict=True):
        assert torch.equal(got, want)


def test_iou_loss_by_hand() -> None:
    """Identical -> 0. (1,1,1,1) in (2,2,2,2): areas 4 and 16, overlap 4 -> IoU 1/4 -> log 4.

    (1,2,3,4) vs (2,1,1,3): areas 4*6 = 24 and 3*4 = 12, overlap min = (1,1,1,3) -> 2*4 = 8,
    union 24 + 12 - 8 = 28 -> IoU 2/7 -> log 3.5.
    """
    pred = torch.tensor([[2.0, 3, 4, 5], [1, 1, 1, 1], [1, 2, 3, 4]])
    target = torch.tensor([[2.0, 3, 4, 5], [2, 2, 2, 2], [2, 1, 1, 3]])
    torch.testing.assert_close(iou_loss(pred, target), torch.tensor([0.0, math.log(4), math.log(3.5)]))
    torch.testing.assert_close(iou_loss(target, pred), torch.tensor([0.0, math.log(4), math.log(3.5)]))


@pytest.mark.parametrize("box_loss", ["giou", "iou"])
def test_no_positives_finite_and_differentiable(box_loss: str) -> None:
    """No boxes, zero logits: every one of 4 points x 3 classes is a negative with p = 0.5,
    focal = 0.75 * 0.5^2 * ln 2 = 0.1875 ln 2 each, sum 2.25 ln 2, divided by max(0, 1) positives.
    """
    points = make_points(((2, 2),), (8,))
    targets = _targets(points, [[]], [[]])
    cls = torch.zeros(1, 4, K, requires_grad=True)
    box = torch.ones(1, 4, 4, requires_grad=True)
    ctr = torch.zeros(1, 4, requires_grad=True)
    losses = fcos_loss(_head_outputs(points, cls, box, ctr), targets, points, num_classes=K,
                       norm_reg_targets=False, box_loss=box_loss)
    assert all(torch.isfinite(v) for v in losses)
    assert losses.cls.item() == pytest.approx(2.25 * LN2, rel=1e-6)
    assert losses.box.item() == 0 and losses.centerness.item() == 0
    losses.total.backward()
    assert cls.grad is not None and torch.isfinite(cls.grad).all() and (cls.grad != 0).all()
    assert box.grad is not None and (box.grad == 0).all()  # in the graph, but nothing to regress


def test_focal_loss_normalised_by_positives() -> None:
    """16x16 image, 2x2 points at 4, 12; box (0,0,10,10) label 1 holds only point (4, 4): 1 positive.

    Zero logits: the positive element costs 0.25 * 0.5^2 * ln 2 = 0.0625 ln 2, the 11 negatives 0.1875 ln 2
    each: sum 2.125 ln 2 over 1 positive. The image twice: sum 4.25 ln 2 over 2 positives, the same;
    averaged with another rank's 6 positives (4) gives 1.0625 ln 2. Center-ness BCE at logit 0 is ln 2 for any target.
    """
    points = make_points(((2, 2),), (8,))
    one = _targets(points, [[[0, 0, 10, 10]]], [[1]])
    assert one.labels.tolist() == [[1, K, K, K]]
    zeros = _head_outputs(points, torch.zeros(1, 4, K), torch.ones(1, 4, 4), torch.zeros(1, 4))
    single = fcos_loss(zeros, one, points, num_classes=K, norm_reg_targets=False)
    assert single.cls.item() == pytest.approx(2.125 * LN2, rel=1e-6)
    assert single.centerness.item() == pytest.approx(LN2, rel=1e-6)

    two = _targets(points, [[[0, 0, 10, 10]], [[0, 0, 10, 10]]], [[1], [1]])
    zeros2 = _head_outputs(points, torch.zeros(2, 4, K), torch.ones(2, 4, 4), torch.zeros(2, 4))
    double = fcos_loss(zeros2, two, points, num_classes=K, norm_reg_targets=False)
    assert double.cls.item() == pytest.approx(2.125 * LN2, rel=1e-6)
    assert double.centerness.item() == pytest.approx(LN2, rel=1e-6)
    forced = fcos_loss(zeros2, two, points, num_classes=K, norm_reg_targets=False,  # as if another rank had 6
                       average_normalizer=lambda local: (local + 6) / 2)
    assert forced.cls.item() == pytest.approx(1.0625 * LN2, rel=1e-6)

    torch.manual_seed(0)
    logits = torch.randn(1, 4, K)
    onehot = torch.zeros(1, 4, K)
    onehot[0, 0, 1] = 1.0
    random = fcos_loss(_head_outputs(points, logits, torch.ones(1, 4, 4), torch.zeros(1, 4)), one, points,
                       num_classes=K, norm_reg_targets=False, focal_alpha=0.4, focal_gamma=1.5)
    want = sigmoid_focal_loss(logits, onehot, alpha=0.4, gamma=1.5, reduction="sum") / 1
    assert random.cls.item() == pytest.approx(want.item(), rel=1e-6)


def test_box_loss_centerness_weighted_mean() -> None:
    """32x32, 4x4 points at 4..28; box (0,0,20,8) holds (4,4) and (12,4) only ((20,4) is on the edge).

    (4,4): ltrb (4,4,16,4), centerness sqrt(4/16 * 4/4) = 0.5, predicted exactly -> loss 0.
    (12,4): ltrb (12,4,8,4), centerness sqrt(8/12) = 0.816497, predicted doubled -> IoU 1/4 -> log 4.
    "centerness": (0 * 0.5 + log 4 * 0.816497) / (0.5 + 0.816497) = 0.859780; "num_pos": log 4 / 2 = ln 2.
    """
    points = make_points(((4, 4),), (8,))
    targets = _targets(points, [[[0, 0, 20, 8]]], [[0]])
    assert (targets.labels[0] == 0).nonzero().squeeze(1).tolist() == [0, 1]
    assert targets.box_targets[0, :2].tolist() == [[4, 4, 16, 4], [12, 4, 8, 4]]
    torch.testing.assert_close(targets.centerness[0, :2], torch.tensor([0.5, math.sqrt(2 / 3)]))
    box = torch.ones(1, 16, 4)
    box[0, 0] = torch.tensor([4.0, 4, 16, 4])
    box[0, 1] = torch.tensor([24.0, 8, 16, 8])
    outputs = _head_outputs(points, torch.zeros(1, 16, K), box, torch.zeros(1, 16))
    weighted = fcos_loss(outputs, targets, points, num_classes=K, norm_reg_targets=False, box_loss="iou",
                         box_loss_norm="centerness")
    c = math.sqrt(2 / 3)
    assert weighted.box.item() == pytest.approx(math.log(4) * c / (0.5 + c), rel=1e-5)
    assert weighted.box.item() == pytest.approx(0.859780, rel=1e-5)
    mean = fcos_loss(outputs, targets, points, num_classes=K, norm_reg_targets=False, box_loss="iou")
    assert mean.box.item() == pytest.approx(LN2, rel=1e-5)


def test_norm_reg_targets_multiplies_by_each_level_stride() -> None:
    """64x64, strides (8, 16), ranges (32,); box (0,0,40,40): 9 level-0 and 3 level-1 positives (test_targets).

    Predictions 2 * target / stride. norm_reg_targets=True: 2 * target in pixels -> log 4 at every point.
    False: target / 4 on level 0 (IoU 1/16 -> 4 ln 2) and target / 8 on level 1 (IoU 1/64 -> 6 ln 2),
    mean (9 * 4 + 3 * 6) / 12 ln 2 = 4.5 ln 2. target / stride with True: GIoU and IoU losses 0.
    """
    points = make_points(((8, 8), (4, 4)), (8, 16))
    targets = _targets(points, [[[0, 0, 40, 40]]], [[2]], size_ranges=(32,))
    positive = targets.labels[0] < K
    assert int(positive[:64].sum()) == 9 and int(positive[64:].sum()) == 3
    in_strides = torch.where(positive[None, :, None], targets.box_targets / points.strides[None, :, None],
                             torch.ones(1, 80, 4))
    cls, ctr = torch.zeros(1, 80, K), torch.zeros(1, 80)
    doubled = _head_outputs(points, cls, 2 * in_strides, ctr)
    scaled = fcos_loss(doubled, targets, points, num_classes=K, norm_reg_targets=True, box_loss="iou")
    assert scaled.box.item() == pytest.approx(math.log(4), rel=1e-5)
    raw = fcos_loss(doubled, targets, points, num_classes=K, norm_reg_targets=False, box_loss="iou")
    assert raw.box.item() == pytest.approx(4.5 * LN2, rel=1e-5)
    exact = _head_outputs(points, cls, in_strides, ctr)
    for box_loss in ("iou", "giou"):
        loss = fcos_loss(exact, targets, points, num_classes=K, norm_reg_targets=True, box_loss=box_loss)
        assert loss.box.item() == pytest.approx(0.0, abs=1e-5)


def test_total_is_weighted_sum() -> None:
    """total = cls_weight * cls + box_weight * box + centerness_weight * centerness."""
    points = make_points(((4, 4),), (8,))
    targets = _targets(points, [[[0, 0, 20, 8]]], [[0]])
    torch.manual_seed(1)
    outputs = _head_outputs(points, torch.randn(1, 16, K), torch.rand(1, 16, 4) * 10 + 1, torch.randn(1, 16))
    plain = fcos_loss(outputs, targets, points, num_classes=K, norm_reg_targets=False)
    weighted = fcos_loss(outputs, targets, points, num_classes=K, norm_reg_targets=False, cls_weight=2.0,
                         box_weight=3.0, centerness_weight=0.5)
    assert plain.total.item() == pytest.approx((plain.cls + plain.box + plain.centerness).item(), rel=1e-6)
    assert weighted.total.item() == pytest.approx((2 * plain.cls + 3 * plain.box + 0.5 * plain.centerness).item(),
                                                  rel=1e-6)
    assert plain.box.item() > 0 and plain.centerness.item() > 0
