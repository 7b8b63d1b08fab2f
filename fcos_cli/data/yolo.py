"""YOLO txt layout: `images/` and `labels/` folders, a data.yaml (or classes.txt) naming the classes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from ..errors import UserError
from .records import MISSING_IMAGE, BoxCheck, DatasetIndex, ImageRecord, image_size, read_mapping

__all__ = ["load_yolo", "IMAGE_SUFFIXES", "detect", "has_val", "load"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _class_names(cfg: dict, yaml_path: Path, root: Path) -> list[str]:
    names = cfg.get("names")
    if isinstance(names, dict):
        if not all(isinstance(k, int) for k in names):
            raise UserError(f"{yaml_path}: 'names' keys must be class numbers 0..K-1, got {list(names)[:5]}")
        if sorted(names) != list(range(len(names))):
            raise UserError(f"{yaml_path}: 'names' must number the classes 0..{len(names) - 1}, got {sorted(names)}")
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        if not names:
            raise UserError(f"{yaml_path}: 'names' is empty; list the class names")
        return [str(n) for n in names]
    if names is not None:
        raise UserError(f"{yaml_path}: 'names' must be a list or a mapping of class numbers to names, "
                        f"got {names!r:.60}")
    for folder in (yaml_path.parent, root):
        if (folder / "classes.txt").is_file():
            return [line.strip() for line in (folder / "classes.txt").read_text().splitlines() if line.strip()]
    raise UserError(f"{yaml_path}: no 'names' key and no classes.txt beside it; list the class names")


def _image_files(entry: str | list, root: Path, yaml_path: Path) -> list[Path]:
    files: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        if not isinstance(item, str):
            raise UserError(f"{yaml_path}: expected a folder or .txt list of images, got {item!r:.60}")
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


def _label_lines(label_file: Path) -> list[str]:
    """Lines of an image's label file; none when it has no file (a negative image)."""
    if not label_file.is_file():
        return []
    try:
        return label_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read label file {label_file}: {getattr(e, 'strerror', None) or e}") from e


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
    check, skipped_files, records = BoxCheck(), [], []
    for image in files:
        size = image_size(image)
        if isinstance(size, str):
            check.skipped[size] += 1
            skipped_files.append((image, "missing" if size == MISSING_IMAGE else "not a readable image"))
            continue
        width, height = size
        boxes, labels = [], []
        for number, line in enumerate(_label_lines(_label_file(image)), 1):
            if not line.strip():
                continue
            try:
                cls, cx, cy, w, h = (float(v) for v in line.split())
            except ValueError as e:
                raise UserError(f"{_label_file(image)}:{number}: expected 'class cx cy w h', "
                                f"got {line.strip()!r:.80}") from e
            if not math.isfinite(cls) or cls != int(cls) or not 0 <= cls < len(names):
                raise UserError(f"{_label_file(image)}:{number}: class {cls:g} is not in 0..{len(names) - 1} "
                                f"(the classes of {yaml_path})")
            box = check((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height,
                        width, height)
            if box is not None:
                boxes.append(box)
                labels.append(int(cls))
        records.append(ImageRecord(image, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                                   len(records), width, height))
    if not records:
        raise UserError(f"{yaml_path}: none of the {len(files)} {split!r} images can be read (first: "
                        f"{skipped_files[0][0]}, {skipped_files[0][1]})")
    return DatasetIndex(records, names, [], dict(check.skipped), check.clipped, skipped_files,
                        f"{yaml_path} ({split})")


def detect(path: Path) -> bool:
    return path.exists() and (path.suffix.lower() in (".yaml", ".yml") or path.is_dir())


def has_val(path: Path) -> bool:
    return True


def load(path: Path, split: str, images_dir: str | Path | None) -> DatasetIndex:
    return load_yolo(path, split)
