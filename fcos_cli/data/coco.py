"""COCO JSON: any category ids mapped to contiguous labels, crowd boxes ignored, mistakes named by file."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from numbers import Real
from pathlib import Path

import numpy as np

from ..errors import UserError
from .records import MISSING_IMAGE, BoxCheck, DatasetIndex, ImageRecord, image_size, read_mapping, safe_join

__all__ = ["load_coco", "detect", "has_val", "load"]

_NUM_ROOT_PROBES = 20  # images tried when looking for the image folder (some may be missing)


def _image_root(json_path: Path, names: list[str], images_dir: str | Path | None) -> Path:
    if images_dir is not None:
        root = Path(images_dir)
        if not root.is_dir():
            raise UserError(f"--images {root}: no such directory")
        return root
    for root in (json_path.parent, json_path.parent / "images"):
        if any((root / name).is_file() for name in names[:_NUM_ROOT_PROBES]):
            return root
    raise UserError(f"{json_path}: image {names[0]!r} is neither in {json_path.parent} nor in "
                    f"{json_path.parent / 'images'}; pass the image folder with --images")


def _entries(data: dict, key: str, needed: tuple[str, ...], json_path: Path) -> list[dict]:
    """`data[key]` as a list of objects that each have the `needed` keys."""
    entries = data[key]
    if not isinstance(entries, list):
        raise UserError(f"{json_path}: {key!r} must be a list, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UserError(f"{json_path}: {key}[{i}] must be an object, got {entry!r:.60}")
        missing = [k for k in needed if k not in entry]
        if missing:
            raise UserError(f"{json_path}: {key}[{i}] (id {entry.get('id')}) lacks {', '.join(map(repr, missing))}")
    return entries


def _unique_ids(entries: list[dict], key: str, json_path: Path) -> None:
    for entry in entries:
        if not isinstance(entry["id"], int) or isinstance(entry["id"], bool):
            raise UserError(f"{json_path}: {key} id {entry['id']!r} is not a whole number")
    repeated = [i for i, n in Counter(e["id"] for e in entries).items() if n > 1]
    if repeated:
        raise UserError(f"{json_path}: {key} ids must be unique; repeated: {repeated[:5]}")


def _bbox(ann: dict, json_path: Path) -> list[float]:
    box = ann["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, Real) or v is None for v in box)):
        raise UserError(f"{json_path}: annotation {ann.get('id')} has bbox {box!r:.80}; expected [x, y, width, height]")
    return [float("nan") if v is None else float(v) for v in box]


def _size_of(info: dict) -> tuple[int, int] | None:
    """(width, height) the file gives an image, if it gives a usable one (else the image header is read)."""
    width, height = info.get("width"), info.get("height")
    if isinstance(width, Real) and isinstance(height, Real) and width > 0 and height > 0:
        return int(width), int(height)
    return None


def load_coco(json_path: str | Path, images_dir: str | Path | None = None) -> DatasetIndex:
    """Records of a COCO detection file; images without annotations are kept as negatives.

    Missing or unreadable images are left out and boxes with nothing inside the image dropped (both
    counted in the returned index); a malformed file is a UserError naming the file and the entry.
    """
    json_path = Path(json_path)
    data = read_mapping(json_path, json.loads, "JSON", "a COCO object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(f"{json_path}: missing the COCO key {key!r} (a COCO file has images, annotations "
                            f"and categories)")
    images = _entries(data, "images", ("id", "file_name"), json_path)
    annotations = _entries(data, "annotations", ("image_id", "category_id", "bbox"), json_path)
    categories = _entries(data, "categories", ("id", "name"), json_path)
    if not images:
        raise UserError(f"{json_path}: no images")
    if not categories:
        raise UserError(f"{json_path}: 'categories' is empty; list the classes as {{\"id\": 1, \"name\": ...}}")
    _unique_ids(images, "image", json_path)
    _unique_ids(categories, "category", json_path)
    category_ids = sorted(c["id"] for c in categories)
    label_of = {cid: i for i, cid in enumerate(category_ids)}
    names = {c["id"]: str(c["name"]) for c in categories}
    by_image: dict = defaultdict(list)
    for ann in annotations:
        by_image[ann["image_id"]].append(ann)
    paths = {info["id"]: safe_join(Path(), info["file_name"], f"{json_path}: image {info['id']}") for info in images}
    root = _image_root(json_path, [str(p) for p in paths.values()], images_dir)
    check, skipped_files, records, unreadable_ids = BoxCheck(), [], [], []
    known = set(paths)
    unknown = sum(len(anns) for image_id, anns in by_image.items() if image_id not in known)
    if unknown:
        check.skipped["annotations of image ids not in 'images'"] += unknown
    for info in sorted(images, key=lambda i: i["id"]):
        path = root / paths[info["id"]]
        known_size = _size_of(info)
        size = image_size(path, exif=known_size is None)
        if isinstance(size, str):
            check.skipped[size] += 1
            skipped_files.append((path, "missing" if size == MISSING_IMAGE else "not a readable image"))
            unreadable_ids.append(int(info["id"]))
            continue
        width, height = known_size or size
        boxes, labels = [], []
        for ann in by_image.get(info["id"], []):
            if ann["category_id"] not in label_of:
                raise UserError(f"{json_path}: annotation {ann.get('id')} has category id {ann['category_id']}, "
                                f"which is not in 'categories' ({category_ids})")
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = _bbox(ann, json_path)
            box = check(x, y, x + w, y + h, width, height)
            if box is not None:
                boxes.append(box)
                labels.append(label_of[ann["category_id"]])
        records.append(ImageRecord(path, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                                   int(info["id"]), width, height))
    if not records:
        raise UserError(f"{json_path}: none of its {len(images)} images can be read (first: {skipped_files[0][0]}, "
                        f"{skipped_files[0][1]}); check the image folder or pass --images")
    return DatasetIndex(records, [names[c] for c in category_ids], category_ids, dict(check.skipped), check.clipped,
                        skipped_files, str(json_path), coco_file=str(json_path), unreadable_ids=unreadable_ids)


def detect(path: Path) -> bool:
    return path.suffix.lower() == ".json" and path.exists()


def has_val(path: Path) -> bool:
    return False  # the file is one split: --val-data or --val-fraction


def load(path: Path, split: str, images_dir: str | Path | None) -> DatasetIndex:
    return load_coco(path, images_dir)
