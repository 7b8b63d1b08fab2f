"""What `fcos predict` writes per image: annotated copies, YOLO label files and crops, at the input's own path.

Every output keeps the image's path relative to the source folder (`a/x.jpg` -> `a/x.jpg`, `labels/a/x.txt`,
`crops/CLASS/a/x.jpg`) and its format, so that two inputs never share an output. N detections per image.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..atomic import atomic_write

__all__ = ["PredictOutputs", "source_root", "relative_names", "write_outputs", "draw_detections"]

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
           "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]
JPEG_QUALITY = 95


@dataclass
class PredictOutputs:
    """The per-image files to write (ultralytics' option names) and how boxes are drawn."""

    save_images: bool = True
    save_txt: bool = False  # labels/REL.txt: `class cx cy w h` normalised to the image, YOLO's layout
    save_conf: bool = False  # ... with the score as a sixth column
    save_crop: bool = False  # crops/CLASS/REL: each detection cut out of the original image
    line_width: int | None = None  # None: from the image size
    hide_labels: bool = False
    hide_conf: bool = False


def source_root(source: str, files: list[Path]) -> Path:
    """The folder output paths are relative to: SOURCE itself when it is a folder, else the files' common folder."""
    if source and Path(source).is_dir():
        return Path(source)
    return Path(os.path.commonpath([str(p.parent.absolute()) for p in files]))


def relative_names(files: list[Path], root: Path) -> list[Path]:
    """Each file's path under `root`, made unique (`x_2.jpg`) where two differ only in case."""
    taken: set[str] = set()
    names = []
    for path in files:
        name = path.absolute().relative_to(root.absolute())
        names.append(_unique(name, taken))
    return names


def _unique(name: Path, taken: set[str]) -> Path:
    """`name`, or `stem_2`, `stem_3`, ... when taken (compared without case: macOS and Windows folders ignore it)."""
    candidate, number = name, 1
    while str(candidate).lower() in taken:
        number += 1
        candidate = name.with_name(f"{name.stem}_{number}{name.suffix}")
    taken.add(str(candidate).lower())
    return candidate


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    if fmt == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    with atomic_write(path) as tmp:
        image.save(tmp, format=fmt, **({"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}))


def write_outputs(out_dir: Path, name: Path, pixels: np.ndarray, boxes: Tensor, scores: Tensor, labels: Tensor,
                  class_names: list[str], outputs: PredictOutputs, crops_taken: set[str]) -> None:
    """Write the outputs of one image: `pixels` (H, W, 3) uint8, boxes (N, 4) xyxy in its pixels, scores (N,),
    labels (N,). `crops_taken` collects crop names across images so that none is written twice."""
    height, width = pixels.shape[:2]
    if outputs.save_images:
        _save(Image.fromarray(draw_detections(pixels, boxes, scores, labels, class_names, outputs)), out_dir / name)
    if outputs.save_txt:
        lines = []
        for (x0, y0, x1, y1), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
            values = [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]
            lines.append(" ".join([str(label), *(f"{v:.6f}" for v in values)]
                                  + ([f"{score:.5f}"] if outputs.save_conf else [])))
        path = out_dir / "labels" / name.with_suffix(".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:  # an empty file for an image without detections: one file per image
            tmp.write_text("".join(line + "\n" for line in lines))
    if outputs.save_crop:
        for (x0, y0, x1, y1), label in zip(boxes.tolist(), labels.tolist(), strict=True):
            left, top = max(math.floor(x0), 0), max(math.floor(y0), 0)
            right, bottom = min(math.ceil(x1), width), min(math.ceil(y1), height)
            if right > left and bottom > top:
                crop = _unique(Path("crops") / class_names[label] / name, crops_taken)
                _save(Image.fromarray(pixels[top:bottom, left:right]), out_dir / crop)


def draw_detections(pixels: np.ndarray, boxes: Tensor, scores: Tensor, labels: Tensor, class_names: list[str],
                    outputs: PredictOutputs) -> np.ndarray:
    """A copy of `pixels` (H, W, 3) uint8 with the boxes drawn as `outputs` asks (images and video frames alike)."""
    if len(boxes) == 0:  # torchvision warns "boxes doesn't contain any box" on an empty list
        return pixels
    from torchvision.utils import draw_bounding_boxes

    text = None
    if not outputs.hide_labels:
        text = [class_names[k] if outputs.hide_conf else f"{class_names[k]} {s:.2f}"
                for k, s in zip(labels.tolist(), scores.tolist(), strict=True)]
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1)  # (3, H, W) uint8
    colors = [PALETTE[k % len(PALETTE)] for k in labels.tolist()]  # one colour per class
    width = outputs.line_width or max(2, round(max(pixels.shape) / 300))
    return draw_bounding_boxes(image, boxes, text, colors=colors, width=width).permute(1, 2, 0).numpy()
