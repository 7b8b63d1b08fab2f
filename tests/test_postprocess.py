"""postprocess on hand-built head outputs: decode, clip, score rule, threshold, class-wise NMS, top-k, limits.

64x64 input, strides (8, 16): level 0 point i = (x, y) at (8*(i % 8) + 4, 8*(i // 8) + 4) for i < 64,
level 1 point 64 + j at (16*(j % 4) + 8, 16*(j // 4) + 8). Background points have class logit -10
(probability 4.5e-5, below every threshold used here).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from fcos_cli.head_outputs import HeadOutputs, unflatten_levels
from fcos_cli.postprocess import postprocess
from fcos_cli.targets import Points, make_points

K = 3
POINTS = make_points(((8, 8), (4, 4)), (8, 16))
P = 80


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _head_outputs(points: Points, cls: Tensor, box: Tensor, ctr: Tensor) -> HeadOutputs:
    return unflatten_levels(cls, box, ctr, list(points.sizes))


class Scene:
    """Flat head outputs for `batch` images, all background until points are set."""

    def __init__(self, batch: int = 1) -> None:
        self.cls = torch.full((batch, P, K), -10.0)
        self.box = torch.ones(batch, P, 4)
        self.ctr = torch.zeros(batch, P)

    def set(self, point: int, label: int, cls_prob: float, ltrb, ctr_prob: float = 0.5, image: int = 0) -> Scene:
        self.cls[image, point, label] = _logit(cls_prob)
        self.box[image, point] = torch.tensor(ltrb, dtype=torch.float32)
        self.ctr[image, point] = _logit(ctr_prob)
        return self

    def run(self, sizes=None, **kwargs):
        sizes = sizes or [(64, 64)] * self.cls.shape[0]
        kwargs.setdefault("norm_reg_targets", False)
        return postprocess(_head_outputs(POINTS, self.cls, self.box, self.ctr), POINTS, sizes, **kwargs)


def _close(got: Tensor, want) -> None:
    torch.testing.assert_close(got, torch.tensor(want, dtype=got.dtype))


@pytest.mark.parametrize(("norm", "point", "ltrb", "box"), [
    (False, 9, (2, 3, 4, 5), [10, 9, 16, 17]),  # (12,12) - (2,3) and + (4,5)
    (True, 9, (0.25, 0.5, 0.75, 1), [10, 8, 18, 20]),  # * 8 = (2,4,6,8) around (12,12)
    (True, 64 + 5, (1, 0.5, 1, 2), [8, 16, 40, 56]),  # level 1 (24,24): * 16 = (16,8,16,32)
])
def test_single_point_decodes_to_its_box(norm: bool, point: int, ltrb, box) -> None:
    """Class 2, cls and center-ness logits 10: sqrt(sigmoid(10) * sigmoid(10)) = sigmoid(10)."""
    det = Scene().set(point, 2, 1 / (1 + math.exp(-10)), ltrb, ctr_prob=1 / (1 + math.exp(-10))).run(
        norm_reg_targets=norm)[0]
    _close(det["boxes"], [box])
    _close(det["scores"], [1 / (1 + math.exp(-10))])
    assert det["labels"].tolist() == [2]


def test_boxes_clipped_to_each_image_size() -> None:
    """Image sizes (H, W) = (30, 50) and (50, 30) padded to 64. In both, point (12,12) with ltrb 20,20,60,60
    gives (-8,-8,72,72) -> (0,0,50,30) and (0,0,30,50). Image 0: (52,12) (index 14) with ltrb 4 ->
    (48,8,56,16) -> x2 50. Image 1: (28,44) (index 5*8+3 = 43) with ltrb (4,4,4,10) -> (24,40,32,54) ->
    (24,40,30,50).
    """
    scene = Scene(batch=2)
    scene.set(9, 0, 0.9, (20, 20, 60, 60), image=0).set(14, 1, 0.8, (4, 4, 4, 4), image=0)
    scene.set(9, 0, 0.9, (20, 20, 60, 60), image=1).set(43, 1, 0.8, (4, 4, 4, 10), image=1)
    dets = scene.run([(30, 50), (50, 30)])
    _close(dets[0]["boxes"], [[0, 0, 50, 30], [48, 8, 50, 16]])
    _close(dets[1]["boxes"], [[0, 0, 30, 50], [24, 40, 30, 50]])


@pytest.mark.parametrize(("rule", "score"), [("sqrt", 0.4), ("product", 0.16)])
def test_score_rule(rule: str, score: float) -> None:
    """cls 0.64, center-ness 0.25: product 0.16, sqrt 0.4."""
    det = Scene().set(9, 1, 0.64, (1, 1, 1, 1), ctr_prob=0.25).run(score_rule=rule)[0]
    _close(det["scores"], [score])


@pytest.mark.parametrize(("rule", "gate", "scores"), [
    ("product", "cls", [0.16]),  # A: cls 0.64 > 0.2 kept with score 0.16; B: cls 0.1 dropped
    ("product", "score", []),  # A 0.16, B 0.09: both below 0.2
    ("sqrt", "cls", [0.4]),  # A only (B's cls 0.1 < 0.2)
    ("sqrt", "score", [0.4, 0.3]),  # A 0.4, B sqrt(0.09) = 0.3
])
def test_threshold_on_cls_or_score(rule: str, gate: str, scores: list[float]) -> None:
    """score_thresh 0.2. A = (12,12): cls 0.64, ctr 0.25; B = (52,44) (index 5*8+6 = 46): cls 0.1, ctr 0.9."""
    scene = Scene().set(9, 0, 0.64, (1, 1, 1, 1), ctr_prob=0.25).set(46, 0, 0.1, (1, 1, 1, 1), ctr_prob=0.9)
    det = scene.run(score_thresh=0.2, threshold_on=gate, score_rule=rule)[0]
    _close(det["scores"], scores)


def test_class_wise_nms() -> None:
    """(12,12) ltrb 10 -> (2,2,22,22) cls 0.9; (20,12) ltrb (14,10,6,10) -> (6,2,26,22) cls 0.8.

    Overlap 16 x 20 = 320, union 400 + 400 - 320 = 480: IoU 2/3. Same class: the second is suppressed at
    nms_iou 0.6 but kept at 0.7; different classes: both kept; the same pair in another image does not
    suppress the first image's boxes.
    """
    a, b = (10, 10, 10, 10), (14, 10, 6, 10)
    same = Scene(batch=2)
    for image in (0, 1):
        same.set(9, 1, 0.9, a, image=image).set(10, 1, 0.8, b, image=image)
    for det in same.run(nms_iou=0.6):
        _close(det["boxes"], [[2, 2, 22, 22]])
        assert det["labels"].tolist() == [1]
    _close(same.run(nms_iou=0.7)[0]["boxes"], [[2, 2, 22, 22], [6, 2, 26, 22]])
    other = Scene().set(9, 1, 0.9, a).set(10, 2, 0.8, b).run(nms_iou=0.6)[0]
    _close(other["boxes"], [[2, 2, 22, 22], [6, 2, 26, 22]])
    assert other["labels"].tolist() == [1, 2]


def test_max_detections_keeps_the_best() -> None:
    """Points 0..9 with cls 0.50, 0.55, ..., 0.95 and 2x2 boxes (disjoint): the 3 best are points 9, 8, 7."""
    scene = Scene()
    for i in range(10):
        scene.set(i, 0, 0.5 + 0.05 * i, (1, 1, 1, 1))
    det = scene.run(max_detections=3)[0]
    _close(det["scores"], [math.sqrt(p * 0.5) for p in (0.95, 0.9, 0.85)])
    _close(det["boxes"], [[11, 11, 13, 13], [3, 11, 5, 13], [59, 3, 61, 5]])  # around (12,12), (4,12), (60,4)
    assert len(scene.run(max_detections=100)[0]["scores"]) == 10


def test_topk_per_level() -> None:
    """Level 0: 5 points at cls 0.91..0.95; level 1: 3 points at 0.6, 0.7, 0.8 (all better than none).

    topk_per_level 2 keeps the 2 best of each level (0.95, 0.94 and 0.8, 0.7), not the global top 4.
    """
    scene = Scene()
    for i, p in enumerate((0.91, 0.92, 0.93, 0.94, 0.95)):
        scene.set(2 * i, 0, p, (1, 1, 1, 1))  # points 0, 2, 4, 6, 8: disjoint 2x2 boxes
    for j, p in zip((64, 66, 72), (0.6, 0.7, 0.8), strict=True):
        scene.set(j, 1, p, (1, 1, 1, 1))
    det = scene.run(topk_per_level=2)[0]
    _close(det["scores"], [math.sqrt(p * 0.5) for p in (0.95, 0.94, 0.8, 0.7)])
    assert det["labels"].tolist() == [0, 0, 1, 1]
    assert len(scene.run(topk_per_level=1000)[0]["scores"]) == 8


def test_all_below_threshold_gives_empty_detections() -> None:
    """Image 0 all background; image 1 one point: image 0 gets (0, 4), (0,), (0,) long tensors."""
    dets = Scene(batch=2).set(9, 1, 0.9, (1, 1, 1, 1), image=1).run()
    assert dets[0]["boxes"].shape == (0, 4) and dets[0]["boxes"].dtype == torch.float32
    assert dets[0]["scores"].shape == (0,)
    assert dets[0]["labels"].shape == (0,) and dets[0]["labels"].dtype == torch.long
    assert len(dets[1]["scores"]) == 1
    (alone,) = Scene().run()
    assert alone["boxes"].shape == (0, 4) and alone["scores"].shape == (0,) and alone["labels"].shape == (0,)
