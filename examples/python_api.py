"""Use a trained detector from Python: load the weights file, predict on PIL images and tensors, draw.

    python examples/python_api.py --weights runs/train/exp/best.safetensors IMAGE [IMAGE ...] [--out out/]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes

import fcos_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--conf", type=float, default=0.25, help="lowest score drawn")
    parser.add_argument("--out", type=Path, default=Path("runs/api"))
    args = parser.parse_args()

    model, cfg, class_names = fcos_cli.load(args.weights)  # the file alone rebuilds the model
    pil_images = [Image.open(p).convert("RGB") for p in args.images]
    detections = fcos_cli.predict(model, cfg, pil_images)
    # Tensors (3, H, W) in 0-1 work the same way and give the same boxes.
    from_tensor = fcos_cli.predict(model, cfg, [pil_to_tensor(pil_images[0]).float() / 255])[0]
    print(f"PIL and tensor input agree: {torch.allclose(from_tensor['boxes'], detections[0]['boxes'], atol=0.5)}")

    args.out.mkdir(parents=True, exist_ok=True)
    for path, image, det in zip(args.images, pil_images, detections, strict=True):
        keep = det["scores"] >= args.conf
        labels = [f"{class_names[k]} {s:.2f}" for k, s in zip(det["labels"][keep].tolist(), det["scores"][keep].tolist(), strict=True)]
        drawn = draw_bounding_boxes(pil_to_tensor(image), det["boxes"][keep], labels, width=2)
        to_pil_image(drawn).save(args.out / f"{path.stem}.png")
        print(f"{path.name}: {int(keep.sum())} detections -> {args.out / (path.stem + '.png')}")


if __name__ == "__main__":
    main()
