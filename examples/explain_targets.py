"""Which points learn which box, and why the others do not: FCOS target assignment from Python, no model needed.

Builds the points of every FPN level for one image size, assigns a few boxes under a preset and prints, per
box, its positives per level and the reason codes of the points inside it that were not made positive
(the same code as `fcos inspect-targets`, without drawing).

    python examples/explain_targets.py [--preset paper] [--img-size 512] [--box 10,10,90,60 --box ...]
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from fcos_cli.config import level_size_ranges, preset
from fcos_cli.inspect_targets import explain_image, points_for_image

DEFAULT_BOXES = ["40,40,440,360", "200,150,260,210", "60,300,90,330", "180,120,300,240"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="improved", choices=["paper", "improved", "torchvision"])
    parser.add_argument("--img-size", type=int, default=512, help="square input side in pixels")
    parser.add_argument("--box", action="append", help="x0,y0,x1,y1 in pixels (repeatable)")
    args = parser.parse_args()

    cfg = preset(args.preset)
    cfg.data.img_size = args.img_size
    cfg.targets.size_ranges = level_size_ranges(cfg)  # the rule's boundaries (8 strides of each finer level)
    strides = [2**level for level in cfg.model.fpn.levels]  # P3..P7: 8..128
    points = points_for_image(args.img_size, args.img_size, strides, cfg.targets)
    print(f"{args.preset}: {len(points.xy)} points on {len(strides)} levels "
          f"({', '.join(f'P{lvl} {h}x{w}' for lvl, (h, w) in zip(cfg.model.fpn.levels, points.sizes, strict=True))}); "
          f"size ranges {list(cfg.targets.size_ranges)}, center sampling radius {cfg.targets.center_sampling_radius}")

    boxes = torch.tensor([[float(v) for v in b.split(",")] for b in (args.box or DEFAULT_BOXES)])
    labels = torch.zeros(len(boxes), dtype=torch.long)  # one class; background is label 1 (= num_classes)
    ex = explain_image("example", points, boxes, labels, num_classes=1, cfg=cfg.targets)
    for box in ex.boxes:
        reasons = Counter(r["reason"] for r in ex.rejected if r["box"] == box["box"])
        side = max(box["xyxy"][2] - box["xyxy"][0], box["xyxy"][3] - box["xyxy"][1])
        print(f"box {box['box']} {box['xyxy']} (longest side {side:.0f} px): {box['positives']} positives "
              f"{box['levels'] or '(none: this box is not learnt)'}; not positive: {dict(reasons) or '-'}")
    print(f"ambiguous points (eligible for two boxes, the smaller box wins): {int(ex.ambiguous.sum())}")


if __name__ == "__main__":
    main()
