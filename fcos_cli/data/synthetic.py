"""The built-in demo dataset: procedurally drawn shapes, deterministic from a seed, written as COCO JSON."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..atomic import atomic_write
from .coco import load_coco
from .records import DatasetIndex

__all__ = ["DEMO_CLASSES", "write_demo_data", "ensure_demo_data", "demo_scene", "DEFAULT_DEMO_DIR", "detect", "has_val",
           "load"]

DEMO_CLASSES = ["ellipse", "rectangle", "triangle"]
DEMO_VERSION = 2  # part of the cache folder name: a changed generator never reuses old images
DEFAULT_DEMO_DIR = Path(os.environ.get("FCOS_DEMO_DIR", Path.home() / ".cache" / "fcos_cli" / "demo"))
# Hue of each class; the value varies per object so that shape and colour both carry the class.
_CLASS_RGB = np.array([[220, 60, 50], [60, 170, 70], [60, 90, 220]], dtype=np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """Low-frequency colour noise plus a few grey lines: texture that is not an object."""
    coarse = rng.uniform(70, 190, size=(max(height // 64, 2), max(width // 64, 2), 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    noise = rng.normal(0, 8, size=(height, width, 3))
    image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        xy = rng.uniform(0, [width, height, width, height]).tolist()
        draw.line(xy, fill=tuple(int(v) for v in rng.integers(60, 200, 3)), width=int(rng.integers(1, 4)))
    return image


def _object_size(rng: np.random.Generator, width: int, height: int) -> tuple[int, int]:
    """Width, height: mostly 16-300 px, some tiny (8 px) and some huge (up to the image's longer side,
    so that with center sampling some points still see max(l,t,r,b) > 512: P7 positives)."""
    kind = rng.random()
    if kind > 0.93:
        side = rng.uniform(0.85, 0.98) * max(width, height)
        w, h = (side, rng.uniform(0.4, 0.95) * height) if width >= height else (rng.uniform(0.4, 0.95) * width, side)
        return int(min(w, width)), int(min(h, height))
    side = rng.uniform(8, 16) if kind < 0.1 else math.exp(rng.uniform(math.log(16), math.log(300)))
    aspect = math.exp(rng.uniform(-1.4, 1.4)) if rng.random() < 0.25 else math.exp(rng.uniform(-0.4, 0.4))
    w, h = side * math.sqrt(aspect), side / math.sqrt(aspect)
    scale = min(1.0, width / w, height / h)
    return max(int(w * scale), 6), max(int(h * scale), 6)


def _draw(draw: ImageDraw.ImageDraw, label: int, box: tuple[int, int, int, int], rgb: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    if label == 0:
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=rgb)
    elif label == 1:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=rgb)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=rgb)


def _make_image(rng: np.random.Generator, max_side: int) -> tuple[Image.Image, list[tuple[list[float], int]]]:
    width, height = (int(v) for v in rng.integers(max_side * 3 // 5, max_side + 1, size=2))
    image = _background(rng, height, width)
    draw = ImageDraw.Draw(image)
    objects = []
    num = 0 if rng.random() < 0.1 else int(rng.integers(1, 7))
    for _ in range(num):
        label = int(rng.integers(len(DEMO_CLASSES)))
        w, h = _object_size(rng, width, height)
        x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        rgb = tuple(int(v) for v in np.clip(_CLASS_RGB[label] * rng.uniform(0.7, 1.15), 0, 255))
        _draw(draw, label, (x0, y0, x0 + w, y0 + h), rgb)
        objects.append(([float(x0), float(y0), float(w), float(h)], label))
    return image.filter(ImageFilter.GaussianBlur(0.6)), objects


def write_demo_data(out: str | Path, num_train: int = 96, num_val: int = 24, max_side: int = 800,
                    seed: int = 0) -> Path:
    """Write `images/*.jpg`, `train.json` and `val.json` (COCO) under `out`; same seed, same bytes."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(DEMO_CLASSES)]
    for split, count, split_seed in (("train", num_train, seed), ("val", num_val, seed + 10_000)):
        rng = np.random.default_rng(split_seed)
        images, annotations = [], []
        for index in range(count):
            image, objects = _make_image(rng, max_side)
            name = f"images/{split}_{index:04d}.jpg"
            image.save(out / name, quality=92)
            images.append({"id": index + 1, "file_name": name, "width": image.width, "height": image.height})
            for (x, y, w, h), label in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                                    "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        data = {"images": images, "annotations": annotations, "categories": categories}
        with atomic_write(out / f"{split}.json") as tmp:  # written last: marks a complete split
            tmp.write_text(json.dumps(data))
    return out


def ensure_demo_data(root: str | Path | None = None, **kwargs: int) -> Path:
    """The demo dataset for these settings under `root`, generated on first use."""
    settings = {"num_train": 96, "num_val": 24, "max_side": 800, "seed": 0, **kwargs}
    base = Path(root) if root is not None else DEFAULT_DEMO_DIR
    out = base / "-".join([f"v{DEMO_VERSION}", *(f"{k}{v}" for k, v in sorted(settings.items()))])
    if not ((out / "train.json").is_file() and (out / "val.json").is_file()):
        write_demo_data(out, **settings)
    return out


def demo_scene(seed: int = 0, max_side: int = 800) -> Image.Image:
    """One generated demo image (shapes on a textured background), e.g. to check an export when there is no data."""
    return _make_image(np.random.default_rng(seed), max_side)[0]


def detect(path: Path) -> bool:
    return str(path) == "demo"


def has_val(path: Path) -> bool:
    return True


def load(path: Path, split: str, images_dir: str | Path | None = None) -> DatasetIndex:
    """A split of the default demo data; evaluated against boxes rebuilt from the records, as YOLO data."""
    return replace(load_coco(ensure_demo_data() / f"{split}.json"), coco_file=None)
