"""FCOS points and target assignment: which feature-map point learns which box (paper Sec. 3.1-3.2).

Shapes: B images, L levels, P points over all levels, M boxes in one image, T boxes in the batch,
K classes. Labels are 0..K-1 and background is K (`num_classes`, as mmdetection; the paper writes
background as class 0 and objects as 1..C), so one-hot over K+1 columns with the last one dropped
gives the per-class sigmoid targets.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple

import torch
from torch import Tensor

from .boxes import boxes_to_ltrb

__all__ = ["Points", "AssignedTargets", "PairTests", "make_points", "level_points", "level_spacings",
           "assign_targets", "pair_tests", "size_bounds"]

TORCHVISION_AREA_BASE = 1e8  # torchvision ranks matches by float32(1e8 - area): ties within its 8 ulp


class Points(NamedTuple):
    """Point locations of all levels, finest first, flattened row-major within a level.

    xy (P, 2) pixel (x, y); strides (P,) nominal stride of each point's level; sizes (H_l, W_l);
    spacings (s_x, s_y) of each level's grid; offset: point of cell i at (i + offset) * spacing.
    """

    xy: Tensor
    strides: Tensor
    sizes: tuple[tuple[int, int], ...]
    spacings: tuple[tuple[int, int], ...]
    level_strides: tuple[int, ...]
    offset: float

    @property
    def num_per_level(self) -> list[int]:
        return [h * w for h, w in self.sizes]


class AssignedTargets(NamedTuple):
    """Per-point targets of a batch.

    matched (B, P) index of the assigned box in its image, -1 for background;
    labels (B, P) class 0..K-1, K for background; box_targets (B, P, 4) (l, t, r, b) in pixels,
    0 for background; centerness (B, P) sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)), 0 for background.
    """

    matched: Tensor
    labels: Tensor
    box_targets: Tensor
    centerness: Tensor


def level_spacings(sizes, strides, spacing: str = "stride") -> list[tuple]:
    """Grid step (s_x, s_y) of each level: the stride, or torchvision's padded image size // feature size.

    `sizes` may hold traced sizes (ONNX export), so that torchvision's spacing follows the input size there too.
    """
    if spacing == "stride":
        return [(s, s) for s in strides]
    pad_h, pad_w = sizes[0][0] * strides[0], sizes[0][1] * strides[0]
    return [(pad_w // w, pad_h // h) for h, w in sizes]


def level_points(height, width, spacing_x, spacing_y, offset: float = 0.5,
                 device: torch.device | str | None = None) -> Tensor:
    """(H*W, 2) (x, y) of one level's cells, row-major, at (index + offset) * spacing.

    Traceable: with traced sizes the ONNX graph makes points for any input size.
    """
    ys = (torch.arange(height, dtype=torch.float32, device=device) + offset) * spacing_y
    xs = (torch.arange(width, dtype=torch.float32, device=device) + offset) * spacing_x
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)  # (H*W, 2)


@functools.lru_cache(maxsize=32)
def make_points(sizes: tuple[tuple[int, int], ...], strides: tuple[int, ...], offset: float = 0.5,
                spacing: str = "stride", device: torch.device | str = "cpu") -> Points:
    """One point per feature cell of each level (cached: callers must not modify the tensors).

    Args:
        sizes: (H_l, W_l) per level, finest first.
        strides: nominal stride per level (8, 16, ...).
        offset: 0.5 puts points at cell centres `stride * i + stride // 2` (paper, mmdet); 0 at
            `stride * i` (torchvision).
        spacing: "stride" (grid step = stride) or "torchvision" (step = padded image size // H_l,
            which differs from the stride at P6/P7 unless the padded sides are multiples of 128).
    """
    xy, point_strides, spacings = [], [], []
    for (h, w), s, (sx, sy) in zip(sizes, strides, level_spacings(sizes, strides, spacing), strict=True):
        xy.append(level_points(h, w, sx, sy, offset, device))
        point_strides.append(torch.full((h * w,), float(s), device=device))
        spacings.append((sx, sy))
    return Points(torch.cat(xy), torch.cat(point_strides), sizes, tuple(spacings), tuple(strides), offset)


def size_bounds(size_ranges: Sequence[float], num_levels: int) -> list[tuple[float, float]]:
    """(m_{i-1}, m_i) per level from the inner boundaries: m_0 = 0, m_L = inf."""
    edges = [0.0, *map(float, size_ranges), math.inf]
    if len(edges) != num_levels + 1:
        raise ValueError(f"{len(size_ranges)} size-range boundaries for {num_levels} levels "
                         f"(need {num_levels - 1})")
    return list(pairwise(edges))


class PairTests(NamedTuple):
    """The rules of FCOS assignment for point/box pairs (any broadcast shape `...`)."""

    ltrb: Tensor  # (..., 4) distances from the point to the box's left, top, right, bottom sides
    inside: Tensor  # (...,) strictly inside the box (a point on an edge has zero distance, zero center-ness)
    in_center: Tensor  # (...,) inside the centre region (radius x stride); all True without center sampling
    in_range: Tensor  # (...,) max(l, t, r, b) within the level's size range

    @property
    def eligible(self) -> Tensor:
        return self.inside & self.in_center & self.in_range


def pair_tests(xy: Tensor, boxes: Tensor, strides: Tensor | float, lo: Tensor | float, hi: Tensor | float,
               radius: float, inclusive: bool) -> PairTests:
    """Each rule for points `xy` (..., 2) against `boxes` (..., 4) xyxy px, written once for `assign_targets`,
    `inspect_targets` and the tests. `strides`, `lo`, `hi` (the level's m_{i-1}, m_i) broadcast the same way."""
    ltrb = boxes_to_ltrb(xy, boxes)
    inside = ltrb.amin(dim=-1) > 0
    if radius > 0:  # center sampling (FCOS "imprv"): only points near the box centre
        center = (boxes[..., :2] + boxes[..., 2:]) / 2
        in_center = (xy - center).abs().amax(dim=-1) < radius * strides
    else:
        in_center = torch.ones_like(inside)
    extent = ltrb.amax(dim=-1)
    # Paper: m_{i-1} <= max(l,t,r,b) <= m_i; torchvision uses strict inequalities.
    in_range = (extent >= lo) & (extent <= hi) if inclusive else (extent > lo) & (extent < hi)
    return PairTests(ltrb, inside, in_center, in_range)


def _candidate_pairs(points: Points, level: int, start: int, boxes: Tensor, radius: float,
                     lo: float, hi: float) -> tuple[Tensor, Tensor]:
    """Box/point pairs worth testing on one level: each box against the cells its region covers.

    A point inside a box of longest side S has S/2 <= max(l,t,r,b) <= S, so a box is tested only on
    the levels whose range meets [S/2, S], and only against the rectangle of cells under its (centre)
    region, widened by one cell: the exact tests in `assign_targets` decide. Returns box indices (Q,)
    and global point indices (Q,).
    """
    h, w = points.sizes[level]
    sx, sy = points.spacings[level]
    side = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1)
    box_ids = ((side >= lo) & (side / 2 <= hi)).nonzero().squeeze(1)
    region = boxes[box_ids]
    if radius > 0:
        center = (region[:, :2] + region[:, 2:]) / 2
        r = radius * points.level_strides[level]
        region = torch.cat([torch.maximum(region[:, :2], center - r), torch.minimum(region[:, 2:], center + r)], 1)
    scale = region.new_tensor([sx, sy, sx, sy])
    cells = region / scale - points.offset
    lo_idx = cells[:, :2].floor().long()
    hi_idx = cells[:, 2:].ceil().long()
    limit = torch.tensor([w - 1, h - 1], device=boxes.device)
    lo_idx = torch.minimum(lo_idx.clamp(min=0), limit)
    hi_idx = torch.minimum(hi_idx.clamp(min=0), limit)
    extent = (hi_idx - lo_idx + 1).clamp(min=0)  # (n, 2) cells along x, y
    counts = extent[:, 0] * extent[:, 1]
    pair_box = torch.repeat_interleave(torch.arange(len(box_ids), device=boxes.device), counts)
    k = torch.arange(len(pair_box), device=boxes.device) - (counts.cumsum(0) - counts)[pair_box]
    nx = extent[pair_box, 0]
    ix = lo_idx[pair_box, 0] + k % nx
    iy = lo_idx[pair_box, 1] + torch.div(k, nx, rounding_mode="floor")
    return box_ids[pair_box], start + iy * w + ix


@torch.no_grad()
def assign_targets(points: Points, gt_boxes: list[Tensor], gt_labels: list[Tensor], num_classes: int,
                   size_ranges: Sequence[float] = (64, 128, 256, 512), inclusive: bool = True,
                   radius: float = 0.0, torchvision_area_rounding: bool = False) -> AssignedTargets:
    """Assign each point of each image to at most one box, in tensor ops over the whole batch.

    A point is positive for a box when it lies strictly inside the box (a point on an edge has a
    zero distance and zero center-ness), inside the centre region of `radius` strides when
    radius > 0 (center sampling), and m_{i-1} <= max(l,t,r,b) <= m_i for its level i (strict
    inequalities when `inclusive` is False, as torchvision). A point with several such boxes takes
    the smallest-area box (paper Sec. 3.1); equal areas go to the first box.

    Args:
        points: from `make_points`, P points.
        gt_boxes: per image (M, 4) xyxy pixels.
        gt_labels: per image (M,) classes 0..K-1.
        num_classes: K, the background label.
        size_ranges: inner boundaries m_1..m_{L-1}.
    """
    device = points.xy.device
    num_images, num_points = len(gt_boxes), len(points.xy)
    counts = [len(b) for b in gt_boxes]
    boxes = torch.cat([b.reshape(-1, 4) for b in gt_boxes]).to(device=device, dtype=torch.float32)  # (T, 4)
    labels = torch.cat([lb.reshape(-1) for lb in gt_labels]).to(device=device, dtype=torch.long)  # (T,)
    image_of_box = torch.repeat_interleave(torch.arange(num_images, device=device),
                                           torch.tensor(counts, device=device))
    first_box = torch.tensor([0, *counts], device=device).cumsum(0)[:-1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if torchvision_area_rounding:
        area = -(TORCHVISION_AREA_BASE - area)  # float32 rounding as torchvision, same order
    pair_box, pair_point = [], []
    start = 0
    for level, (lo, hi) in enumerate(size_bounds(size_ranges, len(points.sizes))):
        box_ids, point_ids = _candidate_pairs(points, level, start, boxes, radius, lo, hi)
        start += points.num_per_level[level]
        ok = pair_tests(points.xy[point_ids], boxes[box_ids], points.level_strides[level], lo, hi, radius,
                        inclusive).eligible  # (Q,)
        pair_box.append(box_ids[ok])
        pair_point.append(point_ids[ok])
    pair_box_t, pair_point_t = torch.cat(pair_box), torch.cat(pair_point)
    key = image_of_box[pair_box_t] * num_points + pair_point_t  # (Q,) flat (image, point)
    pair_area = area[pair_box_t]
    best_area = torch.full((num_images * num_points,), math.inf, device=device)
    best_area.scatter_reduce_(0, key, pair_area, "amin")
    wins = pair_area == best_area[key]
    num_boxes = len(boxes)
    best = torch.full((num_images * num_points,), num_boxes, device=device, dtype=torch.long)
    best.scatter_reduce_(0, key[wins], pair_box_t[wins], "amin")  # (B*P,) global box index

    positive = best < num_boxes
    best = best.clamp(max=max(num_boxes - 1, 0))
    xy = points.xy.repeat(num_images, 1)  # (B*P, 2)
    box = boxes[best] if num_boxes else xy.new_zeros(len(xy), 4)
    ltrb = boxes_to_ltrb(xy, box) * positive[:, None]  # (B*P, 4)
    lr, tb = ltrb[:, 0::2], ltrb[:, 1::2]
    ratio = (lr.amin(1) / lr.amax(1).clamp(min=1e-12)) * (tb.amin(1) / tb.amax(1).clamp(min=1e-12))
    centerness = torch.sqrt(ratio) * positive
    matched = torch.where(positive, best - first_box.repeat_interleave(num_points), -1)
    cls = torch.where(positive, labels[best] if num_boxes else best, num_classes)
    shape = (num_images, num_points)
    return AssignedTargets(matched.view(shape), cls.view(shape), ltrb.view(*shape, 4), centerness.view(shape))
