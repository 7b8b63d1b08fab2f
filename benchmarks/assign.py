"""Target assignment: ours vs torchvision's FCOS matching, batch 8 x 50 boxes at 800x800.

First asserts that our matched box indices (torchvision preset) equal torchvision's, then times both
(median over repeats, same process, same threads) and prints `assign ratio (ours/torchvision): R`.

    python benchmarks/assign.py [--batch 8] [--boxes 50] [--size 800] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torchvision.models.detection.image_list import ImageList

from fcos_cli.config import preset
from fcos_cli.targets import assign_targets, make_points


def random_boxes(num: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Boxes of log-uniform sides from 8 px to the image size, aspect ratios 1:3 to 3:1, inside the image."""
    side = torch.exp(torch.empty(num).uniform_(2.08, torch.log(torch.tensor(size * 0.9)).item(), generator=g))
    aspect = torch.exp(torch.empty(num).uniform_(-1.1, 1.1, generator=g))
    wh = torch.stack([side * aspect.sqrt(), side / aspect.sqrt()], 1).clamp(4, size - 1)
    xy = torch.rand(num, 2, generator=g) * (size - wh)
    return torch.cat([xy, xy + wh], 1)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def make_assigners(batch: int = 8, num_boxes: int = 50, size: int = 800, seed: int = 0):
    """(ours, torchvision): callables returning (B, P) matched box indices for the same random boxes."""
    g = torch.Generator().manual_seed(seed)
    gt_boxes = [random_boxes(num_boxes, size, g) for _ in range(batch)]
    gt_labels = [torch.randint(0, 80, (num_boxes,), generator=g) for _ in range(batch)]

    strides = (8, 16, 32, 64, 128)
    padded = -(-size // 32) * 32
    sizes = [(-(-padded // 8), -(-padded // 8))]  # resnet feature sizes: ceil-halving from stride 8
    for _ in strides[1:]:
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None)
    features = [torch.zeros(batch, 1, h, w) for h, w in sizes]
    image_list = ImageList(torch.zeros(batch, 3, padded, padded), [(size, size)] * batch)
    anchors = tv.anchor_generator(image_list, features)
    num_per_level = [h * w for h, w in sizes]
    targets = [{"boxes": b, "labels": lb} for b, lb in zip(gt_boxes, gt_labels, strict=True)]
    tv.head.compute_loss = lambda targets, head_outputs, anchors, matched_idxs: matched_idxs

    def torchvision_assign() -> torch.Tensor:
        return torch.stack(tv.compute_loss(targets, {}, anchors, num_per_level))

    cfg = preset("torchvision").targets
    points = make_points(tuple(sizes), strides, cfg.point_offset, cfg.point_spacing)

    def our_assign() -> torch.Tensor:
        return assign_targets(points, gt_boxes, gt_labels, 80, cfg.size_ranges, cfg.inclusive_size_ranges,
                              cfg.center_sampling_radius, cfg.torchvision_area_rounding).matched

    return our_assign, torchvision_assign


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    our_assign, torchvision_assign = make_assigners(args.batch, args.boxes, args.size)
    ours, theirs = our_assign(), torchvision_assign()
    assert torch.equal(ours, theirs), f"matching differs at {(ours != theirs).sum()} points"
    num_pos = int((ours >= 0).sum())
    print(f"matched indices equal torchvision's: {args.batch} images x {args.boxes} boxes at {args.size}x{args.size}, "
          f"{ours.shape[1]} points per image, {num_pos} positives")
    tv_ms = median_ms(torchvision_assign, args.repeats)
    our_ms = median_ms(our_assign, args.repeats)
    print(f"threads {torch.get_num_threads()}, median of {args.repeats}: torchvision {tv_ms:.2f} ms, ours {our_ms:.2f} ms")
    print(f"assign ratio (ours/torchvision): {our_ms / tv_ms:.2f}")


if __name__ == "__main__":
    main()
