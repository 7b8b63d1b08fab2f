"""Points and target assignment (paper Sec. 3.1-3.2): hand-computed cases and a dense brute-force cross-check.

Most cases use a 64x64 image with strides (8, 16) and size_ranges (32,): level 0 is 8x8 points at
x, y in {4, 12, ..., 60} for the range [0, 32], level 1 is 4x4 points at {8, 24, 40, 56} for [32, inf].
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from fcos_cli.targets import AssignedTargets, Points, assign_targets, make_points, pair_tests, size_bounds

K = 7  # num_classes: the background label
SIZES_64 = ((8, 8), (4, 4))
STRIDES_2 = (8, 16)


def _assign(boxes: list[list[float]] | list[list[list[float]]], labels: list | None = None, *,
            points: Points | None = None, batch: bool = False, size_ranges=(32,), **kwargs) -> AssignedTargets:
    """assign_targets on one image (or a batch of images when `batch`), labels 0, 1, 2, ... by default."""
    points = points or make_points(SIZES_64, STRIDES_2)
    images = boxes if batch else [boxes]
    gt_boxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) for b in images]
    if labels is None:
        gt_labels = [torch.arange(len(b)) for b in gt_boxes]
    else:
        gt_labels = [torch.tensor(lb, dtype=torch.long) for lb in (labels if batch else [labels])]
    return assign_targets(points, gt_boxes, gt_labels, K, size_ranges=size_ranges, **kwargs)


def _positives(targets: AssignedTargets, points: Points | None = None, image: int = 0) -> dict:
    """{(stride, x, y): matched box} for the positive points of one image."""
    points = points or make_points(SIZES_64, STRIDES_2)
    out = {}
    for p in (targets.matched[image] >= 0).nonzero().squeeze(1).tolist():
        x, y = points.xy[p].tolist()
        out[(int(points.strides[p]), x, y)] = int(targets.matched[image, p])
    return out


def _grid(stride: int, xs, ys, box: int = 0) -> dict:
    return {(stride, float(x), float(y)): box for y in ys for x in xs}


# ----------------------------------------------------------------------------------------- points


def test_make_points_cell_centres_row_major() -> None:
    """offset 0.5: point (i, j) of a level at (stride*i + stride//2, stride*j + stride//2), x fastest."""
    points = make_points(SIZES_64, STRIDES_2, offset=0.5)
    assert points.num_per_level == [64, 16]
    assert points.xy.shape == (80, 2)
    level0 = [[8 * i + 4, 8 * j + 4] for j in range(8) for i in range(8)]
    level1 = [[16 * i + 8, 16 * j + 8] for j in range(4) for i in range(4)]
    assert points.xy.tolist() == level0 + level1
    assert points.xy[1].tolist() == [12, 4] and points.xy[8].tolist() == [4, 12]  # x varies fastest
    assert points.strides.tolist() == [8.0] * 64 + [16.0] * 16
    assert points.spacings == ((8, 8), (16, 16)) and points.level_strides == (8, 16)


def test_make_points_non_square_and_offset_zero() -> None:
    """H=2, W=3 at stride 8: rows of 3 points; offset 0 puts them at stride*i."""
    centres = make_points(((2, 3),), (8,), offset=0.5)
    assert centres.xy.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    corners = make_points(SIZES_64, STRIDES_2, offset=0.0)
    assert corners.xy[:3].tolist() == [[0, 0], [8, 0], [16, 0]]
    assert corners.xy[64:67].tolist() == [[0, 0], [16, 0], [32, 0]]
    assert corners.xy[-1].tolist() == [48, 48]  # level 1 cell (3, 3)
    assert corners.offset == 0.0


def test_make_points_torchvision_spacing() -> None:
    """Padded 64x96 (H x W): level spacing = (96 // W_l, 64 // H_l); the 1x2 P6 grid steps (48, 64), not 64."""
    sizes, strides = ((8, 12), (4, 6), (2, 3), (1, 2)), (8, 16, 32, 64)
    tv = make_points(sizes, strides, offset=0.0, spacing="torchvision")
    assert tv.spacings == ((8, 8), (16, 16), (32, 32), (48, 64))
    assert tv.num_per_level == [96, 24, 6, 2]
    assert tv.xy[-2:].tolist() == [[0, 0], [48, 0]]
    assert tv.strides[-2:].tolist() == [64.0, 64.0]  # nominal stride kept for the size/radius rules
    centred = make_points(sizes, strides, offset=0.5, spacing="torchvision")
    assert centred.xy[-2:].tolist() == [[24, 32], [72, 32]]  # (0.5 * 48, 0.5 * 64), (1.5 * 48, 0.5 * 64)
    nominal = make_points(sizes, strides, offset=0.5, spacing="stride")
    assert nominal.xy[-2:].tolist() == [[32, 32], [96, 32]]


def test_size_bounds() -> None:
    assert size_bounds((64, 128, 256, 512), 5) == [(0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)]
    assert size_bounds((), 1) == [(0.0, math.inf)]
    with pytest.raises(ValueError):
        size_bounds((64, 128), 5)
    with pytest.raises(ValueError):
        size_bounds((32,), 1)
    with pytest.raises(ValueError):  # assign_targets checks it too: 2 levels need 1 boundary
        _assign([[0, 0, 32, 32]], size_ranges=(32, 64))


# ------------------------------------------------------------------------------ hand-built cases


def test_point_on_box_edge_is_not_positive() -> None:
    """Box (4, 4, 28, 28): level-0 points at x = 4 or 28 lie on an edge -> only x, y in {12, 20} (max 16 <= 32).

    Level 1 points (8, 8) .. (24, 24) are inside but max(l,t,r,b) <= 20 < 32. Widening the box by 0.5 px
    brings the 12 edge points inside (max 24.5 <= 32): 16 positives.
    """
    assert _positives(_assign([[4, 4, 28, 28]])) == _grid(8, (12, 20), (12, 20))
    assert _positives(_assign([[3.5, 3.5, 28.5, 28.5]])) == _grid(8, (4, 12, 20, 28), (4, 12, 20, 28))


@pytest.mark.parametrize("inclusive", [True, False])
def test_level_rule_at_exact_boundary(inclusive: bool) -> None:
    """m_{i-1} <= max(l,t,r,b) <= m_i (inclusive) or strict, with max exactly 32 at some points.

    Box (0,0,36,36), level 0: per axis max(x, 36 - x) = 32, 24, 20, 28 for x = 4, 12, 20, 28; the 7 points
    with x or y = 4 have max 32: in [0, 32] but not in (0, 32). Level 1 (x = 8, 24): max 28, 24 < 32.
    Box (0,0,40,40), level 0: max(x, 40 - x) = 36, 28, 20, 28, 36 for x = 4..36 -> only x, y in {12, 20, 28};
    level 1: max(x, 40 - x) = 32, 24 for x = 8, 24 -> (8,8), (24,8), (8,24) have max 32: in [32, inf) only.
    """
    small = _positives(_assign([[0, 0, 36, 36]], inclusive=inclusive))
    big = _positives(_assign([[0, 0, 40, 40]], inclusive=inclusive))
    inner = _grid(8, (12, 20, 28), (12, 20, 28))
    if inclusive:
        assert small == _grid(8, (4, 12, 20, 28), (4, 12, 20, 28))
        assert big == inner | {(16, 8.0, 8.0): 0, (16, 24.0, 8.0): 0, (16, 8.0, 24.0): 0}
    else:
        assert small == inner
        assert big == inner


@pytest.mark.parametrize("inclusive", [True, False])
def test_level_rule_middle_level_upper_bound(inclusive: bool) -> None:
    """128x128, strides (8,16,32), ranges (32, 64). Box (0,0,72,72): only level 1 ([32, 64]) has points.

    Level 1 x = 8, 24, 40, 56: max(x, 72 - x) = 64, 48, 40, 56 -> inclusive all 16 points, strict drops the
    7 with x or y = 8 (max exactly 64). Level 0: max(x, 72 - x) >= 36 > 32. Level 2 (x = 16, 48): 56, 48 < 64.
    """
    points = make_points(((16, 16), (8, 8), (4, 4)), (8, 16, 32))
    got = _positives(_assign([[0, 0, 72, 72]], points=points, size_ranges=(32, 64), inclusive=inclusive), points)
    xs = (8, 24, 40, 56) if inclusive else (24, 40, 56)
    assert got == _grid(16, xs, xs)


def test_smaller_box_wins_shared_points() -> None:
    """A = (0,0,32,32) area 1024, B = (10,10,30,30) area 400, all on level 0 (max <= 28).

    A holds x, y in {4, 12, 20, 28}; B holds x, y in {12, 20, 28} -> those 9 go to B (smaller), the 7 with
    x or y = 4 stay with A. Same result whatever the box order.
    """
    shared = _grid(8, (12, 20, 28), (12, 20, 28))
    only_a = {k: 0 for k in _grid(8, (4, 12, 20, 28), (4, 12, 20, 28)) if k not in shared}
    a, b = [0, 0, 32, 32], [10, 10, 30, 30]
    targets = _assign([a, b], [2, 5])
    assert _positives(targets) == only_a | {k: 1 for k in shared}
    assert targets.labels[0, 9].item() == 5 and targets.labels[0, 0].item() == 2  # (12,12) B, (4,4) A
    assert targets.box_targets[0, 9].tolist() == [2, 2, 18, 18]  # (12,12) against B
    swapped = _assign([b, a], [5, 2])
    assert _positives(swapped) == {k: 1 for k in only_a} | {k: 0 for k in shared}
    assert swapped.labels[0, 9].item() == 5 and swapped.labels[0, 0].item() == 2


def test_equal_areas_first_box_wins() -> None:
    """A = (0,0,32,32), C = (8,8,40,40): both area 1024. Shared points x, y in {12, 20, 28} go to the first box.

    Level 0 only: A's max(x, 32-x) <= 28, C's max(x-8, 40-x) <= 28 (x = 12..36).
    """
    a, c = [0, 0, 32, 32], [8, 8, 40, 40]
    shared = _grid(8, (12, 20, 28), (12, 20, 28))
    all_a = _grid(8, (4, 12, 20, 28), (4, 12, 20, 28), 0)
    all_c = _grid(8, (12, 20, 28, 36), (12, 20, 28, 36), 1)
    first_a = _assign([a, c])
    assert _positives(first_a) == all_c | all_a  # the dict keeps A's 0 for the shared keys
    assert first_a.box_targets[0, 2 * 8 + 2].tolist() == [20, 20, 12, 12]  # (20,20) against A
    first_c = _assign([c, a])
    assert _positives(first_c) == {k: 1 - v for k, v in (all_a | all_c).items()} | {k: 0 for k in shared}
    assert first_c.box_targets[0, 2 * 8 + 2].tolist() == [12, 12, 20, 20]  # (20,20) against C


@pytest.mark.parametrize(("radius", "size_ranges", "expected"), [
    # Box (0,0,64,64), ranges (64,): level 0 holds all 64 points (max <= 60), level 1 none (max <= 56 < 64).
    (0.0, (64,), _grid(8, range(4, 64, 8), range(4, 64, 8))),
    (0.5, (64,), {}),  # |x - 32| < 4: none of x = 28, 36 (distance exactly 4)
    (1.5, (64,), _grid(8, (28, 36), (28, 36))),  # |x - 32| < 12
    (2.5, (64,), _grid(8, (20, 28, 36, 44), (20, 28, 36, 44))),  # |x - 32| < 20
    # Ranges (32,): level 0 none (max >= 36), level 1 all 16 (max 40 or 56); radius in level-1 strides.
    (0.0, (32,), _grid(16, (8, 24, 40, 56), (8, 24, 40, 56))),
    (0.75, (32,), _grid(16, (24, 40), (24, 40))),  # |x - 32| < 0.75 * 16 = 12 (8 would need radius * 8)
])
def test_center_sampling(radius: float, size_ranges: tuple, expected: dict) -> None:
    """Points inside the box but at radius*stride or more from its centre (32, 32) in x or y are negative."""
    targets = _assign([[0, 0, 64, 64]], size_ranges=size_ranges, radius=radius)
    assert _positives(targets) == expected
    if (8, 28.0, 28.0) in expected:  # targets still measured to the box, not to the centre region
        assert targets.box_targets[0, 3 * 8 + 3].tolist() == [28, 28, 36, 36]


def _assert_background(targets: AssignedTargets, image: int) -> None:
    assert (targets.labels[image] == K).all()
    assert (targets.matched[image] == -1).all()
    assert (targets.box_targets[image] == 0).all()
    assert (targets.centerness[image] == 0).all()


def test_image_without_boxes_is_background() -> None:
    targets = assign_targets(make_points(SIZES_64, STRIDES_2), [torch.zeros(0, 4)],
                             [torch.zeros(0, dtype=torch.long)], K, size_ranges=(32,))
    assert targets.labels.shape == (1, 80) and targets.box_targets.shape == (1, 80, 4)
    assert targets.labels.dtype == torch.long and targets.matched.dtype == torch.long
    _assert_background(targets, 0)


def test_batch_mixing_empty_and_non_empty_images() -> None:
    """Box (4,4,28,28) label 3 gives 4 positives (see the edge test) wherever it sits in the batch."""
    box = [[4, 4, 28, 28]]
    for order in ([box, []], [[], box]):
        labels = [[3] if b else [] for b in order]
        targets = _assign(order, labels, batch=True)
        full, empty = (0, 1) if order[0] else (1, 0)
        _assert_background(targets, empty)
        assert _positives(targets, image=full) == _grid(8, (12, 20), (12, 20))
        assert targets.labels[full].tolist().count(3) == 4
        assert targets.labels[full].tolist().count(K) == 76
    nothing = _assign([[], [], []], [[], [], []], batch=True, radius=1.5)
    assert nothing.labels.shape == (3, 80)
    for i in range(3):
        _assert_background(nothing, i)


def test_box_targets_and_centerness() -> None:
    """Box (4, 8, 44, 24), point (12, 12) (level 0, index 1*8+1 = 9): (l,t,r,b) = (8, 4, 32, 12), max 32 <= 32.

    centerness = sqrt(min(8,32)/max(8,32) * min(4,12)/max(4,12)) = sqrt(1/4 * 1/3) = sqrt(1/12) = 0.288675.
    Point (20, 12) (index 10): (16, 4, 24, 12) -> sqrt(16/24 * 4/12) = sqrt(2/9) = 0.471405.
    """
    targets = _assign([[4, 8, 44, 24]], [6])
    assert targets.box_targets[0, 9].tolist() == [8, 4, 32, 12]
    assert targets.centerness[0, 9].item() == pytest.approx(math.sqrt(1 / 12), rel=1e-6)
    assert targets.box_targets[0, 10].tolist() == [16, 4, 24, 12]
    assert targets.centerness[0, 10].item() == pytest.approx(math.sqrt(2 / 9), rel=1e-6)
    assert targets.labels[0, 9].item() == 6
    assert targets.box_targets[0, 0].tolist() == [0, 0, 0, 0]  # (4, 4) is outside (y < 8): background
    assert targets.centerness[0, 0].item() == 0 and targets.labels[0, 0].item() == K


def test_matched_indices_are_per_image() -> None:
    """Image 0: A (0,0,32,32) label 1, X (40,40,60,60) label 2; image 1: Y (10,10,30,30) label 4.

    Point (20, 20) (index 2*8+2 = 18) is A's (0) in image 0 and Y's (0, not the global 2) in image 1;
    (52, 52) (index 6*8+6 = 54) is X's (1): max(52-40, 60-52) = 12.
    """
    targets = _assign([[[0, 0, 32, 32], [40, 40, 60, 60]], [[10, 10, 30, 30]]], [[1, 2], [4]], batch=True)
    assert targets.matched[0, 18].item() == 0 and targets.labels[0, 18].item() == 1
    assert targets.matched[0, 54].item() == 1 and targets.labels[0, 54].item() == 2
    assert targets.matched[1, 18].item() == 0 and targets.labels[1, 18].item() == 4
    assert targets.box_targets[1, 18].tolist() == [10, 10, 10, 10]
    assert targets.matched[1].max().item() == 0


# ------------------------------------------------------------------------- dense cross-check


def _dense_reference(points: Points, gt_boxes: list[torch.Tensor], gt_labels: list[torch.Tensor],
                     size_ranges, inclusive: bool, radius: float) -> AssignedTargets:
    """Every point against every box as (P, M) tensors; the smallest area wins, ties to the first box."""
    bounds = size_bounds(size_ranges, len(points.sizes))
    lo = torch.cat([torch.full((n,), b[0]) for n, b in zip(points.num_per_level, bounds, strict=True)])[:, None]  # (P, 1)
    hi = torch.cat([torch.full((n,), b[1]) for n, b in zip(points.num_per_level, bounds, strict=True)])[:, None]
    num_points = len(points.xy)
    matched, labels, box_targets, centerness = [], [], [], []
    for boxes, lab in zip(gt_boxes, gt_labels, strict=True):
        m = len(boxes)
        if m == 0:
            matched.append(torch.full((num_points,), -1))
            labels.append(torch.full((num_points,), K))
            box_targets.append(torch.zeros(num_points, 4))
            centerness.append(torch.zeros(num_points))
            continue
        tests = pair_tests(points.xy[:, None], boxes[None], points.strides[:, None], lo, hi, radius, inclusive)
        ltrb, ok = tests.ltrb, tests.eligible  # (P, M, 4), (P, M): every pair, no candidate pre-filter
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None, :].expand(num_points, m)
        cost = torch.where(ok, area, torch.full_like(area, math.inf))
        winner = ok & (cost == cost.amin(dim=1, keepdim=True))  # (P, M) smallest area among the valid boxes
        index = torch.where(winner, torch.arange(m)[None, :], m).amin(dim=1)  # first winner, m if none
        positive = index < m
        idx = index.clamp(max=m - 1)
        t = torch.where(positive[:, None], ltrb[torch.arange(num_points), idx], 0.0)  # (P, 4)
        l, tt, r_, b = t.unbind(1)
        ctr = torch.sqrt((torch.minimum(l, r_) / torch.maximum(l, r_)) * (torch.minimum(tt, b) / torch.maximum(tt, b)))
        matched.append(torch.where(positive, index, -1))
        labels.append(torch.where(positive, lab[idx], K))
        box_targets.append(t)
        centerness.append(torch.where(positive, ctr, 0.0))
    return AssignedTargets(*(torch.stack(v) for v in (matched, labels, box_targets, centerness)))


def _random_case(seed: int):
    """A batch of 1-3 images of random sizes (not multiples of 32) padded to 32, random boxes 4 px .. image."""
    rng = random.Random(seed)
    num_levels = rng.choice([2, 3, 5])
    strides = (8, 16, 32, 64, 128)[:num_levels]
    base = rng.choice([(16, 32, 64, 128), (32, 64, 128, 256), (64, 128, 256, 512), (24, 40, 72, 136)])
    images = []
    for _ in range(rng.randint(1, 3)):
        h, w = rng.randint(40, 220), rng.randint(40, 220)
        h, w = h + (h % 32 == 0), w + (w % 32 == 0)
        images.append((h, w))
    pad_h = -(-max(h for h, _ in images) // 32) * 32
    pad_w = -(-max(w for _, w in images) // 32) * 32
    sizes = [(pad_h // 8, pad_w // 8)]
    for _ in range(num_levels - 1):
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    config = dict(offset=rng.choice([0.5, 0.0]), spacing=rng.choice(["stride", "torchvision"]),
                  inclusive=rng.random() < 0.5, radius=rng.choice([0.0, 0.0, 1.0, 1.5, 2.5]),
                  size_ranges=base[:num_levels - 1])
    gt_boxes, gt_labels = [], []
    for h, w in images:
        boxes = []
        for _ in range(rng.choice([0, 1, 3, 6, 10])):
            bw, bh = rng.uniform(4, w), rng.uniform(4, h)
            x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            box = [x1, y1, x1 + bw, y1 + bh]
            if rng.random() < 0.5:  # on a 4-px grid: edges through points, max(l,t,r,b) on the boundaries
                box = [4 * round(v / 4) for v in box]
                box[2], box[3] = max(box[2], box[0] + 4), max(box[3], box[1] + 4)
            boxes.append(box)
        gt_boxes.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        gt_labels.append(torch.tensor([rng.randrange(K) for _ in boxes], dtype=torch.long))
    return tuple(sizes), strides, config, gt_boxes, gt_labels


def test_assign_targets_equals_dense_reference_on_random_batches() -> None:
    """20 random batches x all rule variants: matched/labels exact, box targets exact, centerness close."""
    total_positives, total_boxes, boundary_hits = 0, 0, 0
    for seed in range(20):
        sizes, strides, config, gt_boxes, gt_labels = _random_case(seed)
        points = make_points(sizes, strides, offset=config["offset"], spacing=config["spacing"])
        got = assign_targets(points, gt_boxes, gt_labels, K, size_ranges=config["size_ranges"],
                             inclusive=config["inclusive"], radius=config["radius"])
        want = _dense_reference(points, gt_boxes, gt_labels, config["size_ranges"], config["inclusive"],
                                config["radius"])
        msg = f"seed {seed}: {config} sizes {sizes}"
        assert torch.equal(got.matched, want.matched), msg
        assert torch.equal(got.labels, want.labels), msg
        torch.testing.assert_close(got.box_targets, want.box_targets, rtol=0, atol=0, msg=msg)
        torch.testing.assert_close(got.centerness, want.centerness, msg=msg)
        total_positives += int((want.matched >= 0).sum())
        total_boxes += sum(len(b) for b in gt_boxes)
        other = _dense_reference(points, gt_boxes, gt_labels, config["size_ranges"], not config["inclusive"],
                                 config["radius"])
        boundary_hits += int((other.matched != want.matched).sum())  # points with max(l,t,r,b) on a bound
    # the batches really exercise the rules, exact level boundaries included
    assert total_boxes > 100 and total_positives > 3 * total_boxes and boundary_hits > 0


def test_inspect_targets_reasons_agree_with_assign_targets_on_random_images() -> None:
    """`inspect-targets` explains each point inside a box with the same rules: a positive is eligible for its box,
    a point taken by a smaller box is eligible for both and the winner is not larger, and every eligible point is
    positive (the candidate pre-filter of `assign_targets` never drops an eligible pair)."""
    from fcos_cli.config import TargetsConfig
    from fcos_cli.inspect_targets import explain_image

    checked = {"positive": 0, "taken_by_smaller_box": 0}
    for seed in range(20):
        sizes, strides, config, gt_boxes, gt_labels = _random_case(seed)
        points = make_points(sizes, strides, offset=config["offset"], spacing=config["spacing"])
        cfg = TargetsConfig(size_ranges=config["size_ranges"], inclusive_size_ranges=config["inclusive"],
                            center_sampling_radius=config["radius"])
        boxes, labels = gt_boxes[0], gt_labels[0]
        ex = explain_image("x", points, boxes, labels, K, cfg)
        bounds = torch.tensor(size_bounds(cfg.size_ranges, len(points.sizes)))
        level = torch.repeat_interleave(torch.arange(len(points.sizes)), torch.tensor(points.num_per_level))
        eligible = pair_tests(points.xy[:, None], boxes[None], points.strides[:, None], bounds[level, :1],
                              bounds[level, 1:], cfg.center_sampling_radius, cfg.inclusive_size_ranges).eligible
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert torch.equal(eligible.any(1), ex.matched >= 0), seed
        for p in (ex.matched >= 0).nonzero().squeeze(1).tolist():
            assert eligible[p, ex.matched[p]]
            checked["positive"] += 1
        for row in ex.rejected:
            if row["reason"] == "taken_by_smaller_box":
                at = (points.xy[:, 0] == row["x"]) & (points.xy[:, 1] == row["y"]) & (points.strides == 2 ** row["level"])
                p = int(at.nonzero()[0])  # levels can share a position (offset 0)
                assert eligible[p, row["box"]] and eligible[p, row["taken_by"]]
                assert area[row["taken_by"]] <= area[row["box"]] and row["taken_by"] != row["box"]
                checked["taken_by_smaller_box"] += 1
    assert checked["positive"] > 100 and checked["taken_by_smaller_box"] > 0, checked
