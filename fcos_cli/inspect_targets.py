"""Explain FCOS target assignment: per point and per box, who gets what, at which level, and why not.

Shapes: P points over all levels, M boxes of one image. The explanation is computed densely (every
point against every box, the paper's rules written out once more) and checked against
`assign_targets` in the tests, so the two cannot drift apart silently.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .atomic import atomic_write
from .config import TargetsConfig, level_size_ranges
from .targets import Points, assign_targets, make_points, pair_tests, size_bounds

__all__ = ["REASONS", "ImageExplanation", "explain_image", "feature_sizes", "summarize", "write_assignments",
           "draw_levels", "points_for_image", "inspect_dataset"]

REASONS = OUTSIDE_CENTER, OUT_OF_RANGE, TAKEN = ("outside_center_region", "size_out_of_range", "taken_by_smaller_box")


def feature_sizes(height: int, width: int, strides: list[int], size_divisor: int = 32) -> tuple[tuple[int, int], ...]:
    """(H_l, W_l) of each level for an input padded to `size_divisor` (backbone levels exact, extras ceil-halved)."""
    h, w = -(-height // size_divisor) * size_divisor, -(-width // size_divisor) * size_divisor
    sizes = []
    for s in strides:
        if s <= size_divisor:
            sizes.append((h // s, w // s))
        else:
            sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    return tuple(sizes)


@dataclass
class ImageExplanation:
    name: str
    positives: list[dict] = field(default_factory=list)  # one row per positive point
    boxes: list[dict] = field(default_factory=list)  # one row per box: levels, positive count
    rejected: list[dict] = field(default_factory=list)  # points inside a box not made positive for it, with why
    ambiguous: Tensor | None = None  # (P,) bool: positive-eligible for two or more boxes
    matched: Tensor | None = None  # (P,) box index or -1
    centerness: Tensor | None = None  # (P,)


def explain_image(name: str, points: Points, boxes: Tensor, labels: Tensor, num_classes: int,
                  cfg: TargetsConfig) -> ImageExplanation:
    """Every rule of the assignment, per (point, box) pair, for one image (boxes (M, 4) xyxy px)."""
    assigned = assign_targets(points, [boxes], [labels], num_classes, cfg.size_ranges, cfg.inclusive_size_ranges,
                              cfg.center_sampling_radius, cfg.torchvision_area_rounding)
    matched = assigned.matched[0]
    ex = ImageExplanation(name, matched=matched, centerness=assigned.centerness[0])
    level = torch.repeat_interleave(torch.arange(len(points.sizes)), torch.tensor(points.num_per_level))  # (P,)
    bounds = torch.tensor(size_bounds(cfg.size_ranges, len(points.sizes)))[level]  # (P, 2)
    tests = pair_tests(points.xy[:, None, :], boxes[None], points.strides[:, None], bounds[:, :1], bounds[:, 1:],
                       cfg.center_sampling_radius, cfg.inclusive_size_ranges)  # every (P, M) pair
    ltrb, inside, in_center, in_range = tests.ltrb, tests.inside, tests.in_center, tests.in_range
    ex.ambiguous = tests.eligible.sum(1) >= 2
    level_number = [int(math.log2(s)) for s in points.level_strides]  # P3 has stride 8
    for p in (matched >= 0).nonzero().squeeze(1).tolist():
        m = int(matched[p])
        ex.positives.append({
            "image": name, "level": level_number[level[p]], "stride": points.level_strides[level[p]],
            "x": float(points.xy[p, 0]), "y": float(points.xy[p, 1]), "box": m, "class": int(labels[m]),
            "l": float(ltrb[p, m, 0]), "t": float(ltrb[p, m, 1]), "r": float(ltrb[p, m, 2]), "b": float(ltrb[p, m, 3]),
            "centerness": round(float(assigned.centerness[0, p]), 4), "ambiguous": bool(ex.ambiguous[p])})
    for m in range(len(boxes)):
        mine = matched == m
        per_level = Counter(level_number[i] for i in level[mine].tolist())
        ex.boxes.append({"image": name, "box": m, "class": int(labels[m]), "xyxy": [round(v, 2) for v in boxes[m].tolist()],
                         "positives": int(mine.sum()), "levels": {f"P{k}": v for k, v in sorted(per_level.items())}})
        for p in (inside[:, m] & ~mine).nonzero().squeeze(1).tolist():
            reason = OUTSIDE_CENTER if not in_center[p, m] else OUT_OF_RANGE if not in_range[p, m] else TAKEN
            ex.rejected.append({"image": name, "box": m, "level": level_number[level[p]], "x": float(points.xy[p, 0]),
                                "y": float(points.xy[p, 1]), "reason": reason,
                                "taken_by": int(matched[p]) if reason == TAKEN else None})
    return ex


def summarize(explanations: list[ImageExplanation], level_numbers: list[int]) -> dict:
    """Positives and boxes per level, ambiguous-point ratio, boxes without positives, best possible recall."""
    boxes = [b for ex in explanations for b in ex.boxes]
    positives = [p for ex in explanations for p in ex.positives]
    per_level = Counter(p["level"] for p in positives)
    box_levels = Counter(max(b["levels"], key=b["levels"].get) for b in boxes if b["levels"])
    ambiguous = sum(int(ex.ambiguous.sum()) for ex in explanations)
    return {
        "boxes": len(boxes), "positives": len(positives),
        "positives_per_level": {f"P{n}": per_level.get(n, 0) for n in level_numbers},
        "boxes_per_level": {f"P{n}": box_levels.get(f"P{n}", 0) for n in level_numbers},
        "ambiguous_ratio": ambiguous / max(len(positives), 1),
        "boxes_without_positives": sum(b["positives"] == 0 for b in boxes),
        "bpr": sum(b["positives"] > 0 for b in boxes) / max(len(boxes), 1),
    }


def write_assignments(explanations: list[ImageExplanation], out: Path) -> None:
    """assignments.json (positives, boxes, rejected points) and one CSV per table."""
    tables = {"positives": [r for ex in explanations for r in ex.positives],
              "boxes": [r for ex in explanations for r in ex.boxes],
              "rejected": [r for ex in explanations for r in ex.rejected]}
    with atomic_write(out / "assignments.json") as tmp:
        tmp.write_text(json.dumps(tables))
    for name, rows in tables.items():
        with atomic_write(out / f"{name}.csv") as tmp, open(tmp, "w", newline="") as f:
            if rows:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)


def draw_levels(image: Tensor, ex: ImageExplanation, points: Points, boxes: Tensor, out: Path) -> list[Path]:
    """One PNG per level: every point of the level, positives coloured by box with center-ness as
    intensity, ambiguous points ringed, boxes without any positive outlined in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    paths, start = [], 0
    empty = [b["box"] for b in ex.boxes if b["positives"] == 0]
    for lvl, count in enumerate(points.num_per_level):
        sl = slice(start, start + count)
        start += count
        xy, matched = points.xy[sl], ex.matched[sl]
        fig, ax = plt.subplots(figsize=(image.shape[2] / 80, image.shape[1] / 80), dpi=80)
        ax.imshow(image.permute(1, 2, 0).numpy(), alpha=0.5)  # dimmed so that the points stand out
        for m, box in enumerate(boxes.tolist()):
            red = m in empty
            ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, lw=2 if red else 1,
                                       ec="red" if red else colours(m % 10), ls="-" if red else "--"))
        neg = matched < 0
        size = max(2.0, 60 / math.sqrt(max(count, 1)))
        ax.scatter(xy[neg, 0], xy[neg, 1], s=size, c="0.3", alpha=0.5, linewidths=0)
        pos = ~neg
        if pos.any():
            rgba = torch.tensor([colours(int(m) % 10) for m in matched[pos]])
            rgba[:, 3] = 0.25 + 0.75 * ex.centerness[sl][pos]  # center-ness target as intensity
            ax.scatter(xy[pos, 0], xy[pos, 1], s=size * 8, c=rgba.numpy(), edgecolors="black", linewidths=0.6)
        amb = ex.ambiguous[sl]
        if amb.any():
            ax.scatter(xy[amb, 0], xy[amb, 1], s=size * 16, facecolors="none", edgecolors="magenta", linewidths=1.2)
        number = int(math.log2(points.level_strides[lvl]))
        ax.set_title(f"{ex.name}  P{number} (stride {points.level_strides[lvl]}): {int(pos.sum())} positives"
                     f"{f', boxes without positives (red): {empty}' if empty else ''}", fontsize=8)
        ax.set_axis_off()
        path = out / f"{Path(ex.name).stem}_P{number}.png"
        fig.tight_layout()
        with atomic_write(path) as tmp:
            fig.savefig(tmp)
        plt.close(fig)
        paths.append(path)
    return paths


def points_for_image(height: int, width: int, strides: list[int], cfg: TargetsConfig, size_divisor: int = 32) -> Points:
    return make_points(feature_sizes(height, width, strides, size_divisor), tuple(strides), cfg.point_offset,
                       cfg.point_spacing)


def inspect_dataset(index, cfg, num_images: int, out: Path, draw: bool = True) -> dict:
    """Explain the first `num_images` images of `index` (resized as for validation) under `cfg`.

    Writes overlays (one PNG per image and level), assignments.json/.csv and stats.json to `out`;
    returns the statistics for the chosen settings and for center sampling off/on and no level ranges.
    """
    from dataclasses import replace

    from .data.dataset import DetectionDataset
    from .data.transforms import build_transform

    cfg.targets.size_ranges = level_size_ranges(cfg)  # the rule's values (or --size-ranges)
    d = cfg.data
    transform = build_transform(d.img_size, train=False, max_size=d.max_size, rounding=d.size_rounding)
    dataset = DetectionDataset(index.records[:num_images], transform)
    strides = [2**lvl for lvl in cfg.model.fpn.levels]
    variants = {
        "chosen": cfg.targets,
        "center sampling off": replace(cfg.targets, center_sampling_radius=0.0),
        "center sampling 1.5": replace(cfg.targets, center_sampling_radius=1.5),
        "no level ranges": replace(cfg.targets, size_ranges=(math.inf,) * (len(strides) - 1)),
    }
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[ImageExplanation]] = {k: [] for k in variants}
    for i in range(len(dataset)):
        image, target, meta = dataset[i]
        name = index.records[i].path.name
        for key, targets_cfg in variants.items():
            points = points_for_image(image.shape[1], image.shape[2], strides, targets_cfg, cfg.model.size_divisor)
            ex = explain_image(name, points, target["boxes"], target["labels"], cfg.model.num_classes, targets_cfg)
            results[key].append(ex)
            if key == "chosen" and draw:
                draw_levels(image, ex, points, target["boxes"], out)
    write_assignments(results["chosen"], out)
    stats = {key: summarize(exs, list(cfg.model.fpn.levels)) for key, exs in results.items()}
    with atomic_write(out / "stats.json") as tmp:
        tmp.write_text(json.dumps(stats, indent=2))
    return stats
