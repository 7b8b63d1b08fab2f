"""Quickstart: an FCOS detector on a timm backbone learns one generated image, then detects its objects.

Builds the model, shows the target assignment per FPN level, trains a few steps on the image
(overfitting it on purpose), prints losses and detections, and round-trips the weights file.

    python examples/quickstart.py [--backbone resnet18] [--steps 60] [--out runs/quickstart]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from fcos_cli import checkpoint
from fcos_cli.config import preset
from fcos_cli.metadata import WeightsInfo
from fcos_cli.model import build_model
from fcos_cli.pipeline import detections_for, loss_for, points_for, targets_for

CLASSES = ["square", "bar", "dot"]


def make_image(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A textured 0-1 image with filled shapes of three classes and very different sizes."""
    g = torch.Generator().manual_seed(seed)
    image = 0.35 + 0.1 * torch.rand(3, size, size, generator=g)
    s = size / 320
    boxes = torch.tensor([[30, 40, 190, 200], [210, 30, 240, 290], [250, 250, 274, 274], [60, 230, 76, 246]]) * s
    labels = torch.tensor([0, 1, 2, 2])
    colours = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9]])
    for (x0, y0, x1, y1), label in zip(boxes.round().long().tolist(), labels.tolist(), strict=True):
        image[:, y0:y1, x0:x1] = colours[label][:, None, None]
    return image, boxes.float(), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", help="any timm model name")
    parser.add_argument("--preset", default="improved", choices=["paper", "improved", "torchvision"])
    parser.add_argument("--img-size", type=int, default=320)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--fpn-channels", type=int, default=64)
    parser.add_argument("--conf", type=float, default=0.25, help="lowest score printed")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    args = parser.parse_args()
    console = Console()
    torch.manual_seed(0)

    cfg = preset(args.preset)
    cfg.model.num_classes = len(CLASSES)
    cfg.model.backbone.name = args.backbone
    cfg.model.fpn.out_channels = args.fpn_channels
    cfg.model.head.num_groups = min(32, args.fpn_channels // 2)  # GroupNorm needs 2+ values on 1x1 maps
    model = build_model(cfg.model)
    num_params = sum(p.numel() for p in model.parameters()) / 1e6
    console.print(f"[bold]FCOS[/bold] on timm [cyan]{args.backbone}[/cyan], preset {args.preset}, "
                  f"{num_params:.1f} M parameters, strides {model.strides}")

    image, boxes, labels = make_image(args.img_size, seed=0)
    images, gt_boxes, gt_labels = image[None], [boxes], [labels]
    with torch.no_grad():
        outputs = model(images)
    points = points_for(outputs, model.strides, cfg)
    assigned = targets_for(points, gt_boxes, gt_labels, cfg)
    table = Table("level", "stride", "points", "positives", "boxes assigned", title="Target assignment")
    start = 0
    for level, (count, stride) in enumerate(zip(points.num_per_level, model.strides, strict=True)):
        matched = assigned.matched[0, start:start + count]
        owners = sorted(set(matched[matched >= 0].tolist()))
        table.add_row(f"P{cfg.model.fpn.levels[level]}", str(stride), str(count), str(int((matched >= 0).sum())),
                      ", ".join(f"#{i} {CLASSES[labels[i]]}" for i in owners) or "-")
        start += count
    console.print(table)
    unassigned = sorted(set(range(len(boxes))) - set(assigned.matched[0][assigned.matched[0] >= 0].tolist()))
    if unassigned:  # e.g. a bar thinner than a stride may hold no point of its level (paper Sec. 3.2)
        console.print("boxes with no positive point on any level: "
                      + ", ".join(f"#{i} {CLASSES[labels[i]]}" for i in unassigned))

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    start_time = time.perf_counter()
    for step in range(1, args.steps + 1):
        losses = loss_for(model(images), model.strides, gt_boxes, gt_labels, cfg)
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
        if step == 1 or step % max(args.steps // 6, 1) == 0 or step == args.steps:
            console.print(f"step {step:3d}  loss {losses.total.item():.3f}  (cls {losses.cls.item():.3f}, "
                          f"box {losses.box.item():.3f}, centerness {losses.centerness.item():.3f})")
    console.print(f"{args.steps} steps in {time.perf_counter() - start_time:.1f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    weights = checkpoint.save(args.out / "model.safetensors", model, WeightsInfo(cfg, CLASSES))
    model, cfg, names = checkpoint.load(weights)
    with torch.no_grad():
        detections = detections_for(model(images), model.strides, [tuple(image.shape[-2:])], cfg)[0]
    table = Table("class", "score", "box (x0, y0, x1, y1)", title=f"Detections (weights reloaded from {weights})")
    shown = detections["scores"] >= args.conf
    for box, score, label in zip(detections["boxes"][shown], detections["scores"][shown], detections["labels"][shown], strict=True):
        table.add_row(names[label], f"{score:.2f}", ", ".join(f"{v:.0f}" for v in box.tolist()))
    console.print(table)
    console.print("ground truth: " + "; ".join(
        f"{CLASSES[lb]} ({', '.join(f'{v:.0f}' for v in b.tolist())})" for b, lb in zip(boxes, labels, strict=True)))


if __name__ == "__main__":
    main()
