"""YOLO txt layout: `images/` and `labels/` folders, a data.yaml (or classes.txt) naming the classes."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ..errors import UserError
from .records import DatasetIndex, ImageRecord, read_mapping

__all__ = ["load_yolo", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
_EXIF_ORIENTATION = 0x0112


def _class_names(cfg: dict, yaml_path: Path, root: Path) -> list[str]:
    names = cfg.get("names")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, list):
        return [str(n) for n in names]
    for folder in (yaml_path.parent, root):
        if (folder / "classes.txt").is_file():
            return [line.strip() for line in (folder / "classes.txt").read_text().splitlines() if line.strip()]
    raise UserError(f"{yaml_path}: no 'names' key and no classes.txt beside it; list the class names")


def _image_files(entry: str | list, root: Path, yaml_path: Path) -> list[Path]:
    files: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        path = Path(item) if Path(item).is_absolute() else root / item
        if path.is_dir():
            files += [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.suffix == ".txt" and path.is_file():
            files += [Path(p) if Path(p).is_absolute() else root / p
                      for p in (line.strip() for line in path.read_text().splitlines()) if p]
        else:
            raise UserError(f"{yaml_path}: {path} is neither an image folder nor a .txt list of images")
    return sorted(files)


def _label_file(image: Path) -> Path:
    parts = list(image.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


def _size(image: Path) -> tuple[int, int]:
    """(width, height) as the image will be loaded, EXIF orientation applied."""
    try:
        with Image.open(image) as im:
            width, height = im.size
            if im.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
    except OSError as e:
        raise UserError(f"cannot read image {image}: {e}") from None
    return width, height


def load_yolo(yaml_path: str | Path, split: str = "train") -> DatasetIndex:
    """Records of one split (`train` or `val`) of a YOLO dataset; boxes converted to pixel xyxy."""
    yaml_path = Path(yaml_path)
    if yaml_path.is_dir():
        yaml_path = yaml_path / "data.yaml"
    cfg = read_mapping(yaml_path, yaml.safe_load, "YAML", "a mapping with path, train, val and names")
    root = Path(cfg.get("path") or yaml_path.parent)
    root = root if root.is_absolute() else yaml_path.parent / root
    if split not in cfg or not cfg[split]:
        raise UserError(f"{yaml_path}: no {split!r} key (the {split} images)")
    names = _class_names(cfg, yaml_path, root)
    files = _image_files(cfg[split], root, yaml_path)
    if not files:
        raise UserError(f"{yaml_path}: no images for {split!r} (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
    skipped: Counter[str] = Counter()
    records = []
    for image_id, image in enumerate(files):
        width, height = _size(image)
        boxes, labels = [], []
        label_file = _label_file(image)
        lines = label_file.read_text().splitlines() if label_file.is_file() else []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                cls, cx, cy, w, h = (float(v) for v in line.split())
            except ValueError:
                raise UserError(f"{label_file}:{number}: expected 'class cx cy w h', got {line.strip()!r}") from None
            if cls != int(cls) or not 0 <= cls < len(names):
                raise UserError(f"{label_file}:{number}: class {cls:g} is not in 0..{len(names) - 1}")
            x0, x1 = max((cx - w / 2) * width, 0.0), min((cx + w / 2) * width, width)
            y0, y1 = max((cy - h / 2) * height, 0.0), min((cy + h / 2) * height, height)
            if any(math.isnan(v) for v in (x0, y0, x1, y1)) or x1 - x0 <= 0 or y1 - y0 <= 0:
                skipped["empty or invalid box"] += 1
                continue
            boxes.append([x0, y0, x1, y1])
            labels.append(int(cls))
        records.append(ImageRecord(image, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                                   image_id, width, height))
    return DatasetIndex(records, names, [], dict(skipped))
