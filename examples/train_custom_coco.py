"""Train FCOS on your own COCO dataset from Python, then evaluate it.

    python examples/train_custom_coco.py --train instances_train.json --val instances_val.json \
        [--images DIR] [--backbone resnet18] [--epochs 12] [--img-size 512] [--out runs/custom] [--no-pretrained]

The backbone starts from timm's ImageNet weights (downloaded once). Without --train it writes a small synthetic
COCO dataset first (shapes, `fcos demo-data`) and trains on it from scratch, offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fcos_cli.config import preset
from fcos_cli.data import open_data
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.engine import resolve_device
from fcos_cli.engine.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, help="COCO JSON of the training images")
    parser.add_argument("--val", type=Path, help="COCO JSON of the validation images")
    parser.add_argument("--images", type=Path, help="image folder (default: beside the JSON)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--img-size", type=int, default=512)
    parser.add_argument("--fpn-channels", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/custom"))
    parser.add_argument("--no-pretrained", action="store_true", help="random backbone weights, not timm's")
    args = parser.parse_args()
    pretrained = not args.no_pretrained and args.train is not None
    if args.train is None:
        root = write_demo_data(args.out / "data", num_train=8, num_val=4, max_side=320)
        args.train, args.val = root / "train.json", root / "val.json"

    cfg = preset("improved")
    cfg.model.backbone.name, cfg.model.backbone.pretrained = args.backbone, pretrained
    cfg.model.fpn.out_channels = args.fpn_channels
    cfg.model.head.num_groups = min(32, args.fpn_channels // 2)  # >= 2 channels a group: 1x1 maps at batch 1
    cfg.data.img_size = args.img_size
    cfg.train.epochs, cfg.train.batch_size = args.epochs, args.batch_size
    cfg.train.optimizer, cfg.train.lr, cfg.train.workers = "adamw", 1e-3, 0
    train_index, val_index = open_data(args.train, args.val, images_dir=args.images)
    result = train(cfg, train_index, val_index, args.out / "run", resolve_device("auto"))
    if result.final is not None:
        print(f"mAP {result.final.metrics['AP']:.3f}  mAP50 {result.final.metrics['AP50']:.3f}")
    print(f"weights: {result.best}")


if __name__ == "__main__":
    main()
