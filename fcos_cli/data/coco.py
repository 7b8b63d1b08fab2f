"""COCO JSON via pycocotools: any category ids mapped to contiguous labels, crowd boxes ignored."""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from ..errors import UserError
from .records import DatasetIndex, ImageRecord, read_mapping

__all__ = ["load_coco"]


def _image_root(json_path: Path, images: list[dict], images_dir: str | Path | None) -> Path:
    if images_dir is not None:
        root = Path(images_dir)
        if not root.is_dir():
            raise UserError(f"--images {root}: no such directory")
        return root
    first = images[0]["file_name"]
    for root in (json_path.parent, json_path.parent / "images"):
        if (root / first).is_file():
            return root
    raise UserError(f"{json_path}: image {first!r} is neither in {json_path.parent} nor in "
                    f"{json_path.parent / 'images'}; pass the image folder with --images")


def load_coco(json_path: str | Path, images_dir: str | Path | None = None) -> DatasetIndex:
    """Records of a COCO detection file; images without annotations are kept as negatives."""
    json_path = Path(json_path)
    data = read_mapping(json_path, json.loads, "JSON", "a COCO object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(f"{json_path}: missing the COCO key {key!r}")
    if not data["images"]:
        raise UserError(f"{json_path}: no images")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    category_ids = sorted(c["id"] for c in data["categories"])
    label_of = {cid: i for i, cid in enumerate(category_ids)}
    names = {c["id"]: c["name"] for c in data["categories"]}
    root = _image_root(json_path, data["images"], images_dir)
    skipped: Counter[str] = Counter()
    records = []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        width, height = info.get("width"), info.get("height")
        boxes, labels = [], []
        for ann in coco.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0):
                continue
            if ann["category_id"] not in label_of:
                raise UserError(f"{json_path}: annotation {ann.get('id')} has category id {ann['category_id']}, "
                                f"which is not in 'categories' ({category_ids})")
            x, y, w, h = (float(v) for v in ann["bbox"])
            x0, y0, x1, y1 = x, y, x + w, y + h
            if width and height:
                x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
                y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
            if any(math.isnan(v) for v in (x0, y0, x1, y1)) or x1 - x0 <= 0 or y1 - y0 <= 0:
                skipped["empty or invalid box"] += 1
                continue
            boxes.append([x0, y0, x1, y1])
            labels.append(label_of[ann["category_id"]])
        records.append(ImageRecord(root / info["file_name"], np.array(boxes, np.float32).reshape(-1, 4),
                                   np.array(labels, np.int64), int(image_id), width, height))
    return DatasetIndex(records, [names[c] for c in category_ids], category_ids, dict(skipped))
