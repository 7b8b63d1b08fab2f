"""Datasets: COCO JSON, YOLO txt and the built-in demo, read into `DatasetIndex` records."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from .records import DatasetIndex, ImageRecord

if TYPE_CHECKING:
    from ..config import DataConfig

__all__ = ["DatasetIndex", "ImageRecord", "open_data", "open_split", "open_recorded"]


def open_split(data: str | Path, split: str = "train", images_dir: str | Path | None = None,
               flag: str = "--data") -> DatasetIndex:
    """One split of `demo`, a COCO JSON file (the split is the file) or a YOLO data.yaml.

    `flag` names the option the path came from in error messages.
    """
    from .coco import load_coco
    from .synthetic import ensure_demo_data

    if split not in ("train", "val"):
        raise UserError(f"split {split!r}: expected train or val")
    if str(data) == "demo":  # evaluated against boxes rebuilt from the records, as YOLO data
        return replace(load_coco(ensure_demo_data() / f"{split}.json"), coco_file=None)
    path = Path(data)
    if not path.exists():
        raise UserError(f"{flag} {data}: no such file or directory (give a COCO .json, a YOLO data.yaml, or demo)")
    if path.suffix.lower() == ".json":
        return load_coco(path, images_dir)
    if path.suffix.lower() in (".yaml", ".yml") or path.is_dir():
        from .yolo import load_yolo

        return load_yolo(path, split)
    raise UserError(f"{flag} {data}: expected a COCO .json, a YOLO data.yaml, or demo")


def open_data(data: str | Path, val_data: str | Path | None = None, val_fraction: float = 0.0,
              seed: int = 0, images_dir: str | Path | None = None) -> tuple[DatasetIndex, DatasetIndex | None]:
    """Train and validation indexes: `demo` and YOLO yamls carry their val split; a COCO file needs
    `val_data` or `val_fraction` (a seeded split of its images)."""
    train = open_split(data, "train", images_dir)
    if val_data is not None:
        val = open_split(val_data, "val", flag="--val-data")
    elif str(data) == "demo" or Path(data).suffix.lower() in (".yaml", ".yml") or Path(data).is_dir():
        val = open_split(data, "val", images_dir) if val_fraction == 0 else None
    else:
        val = None
    if val is None and val_fraction > 0:
        order = list(range(len(train.records)))
        random.Random(seed).shuffle(order)
        num_val = max(1, round(len(order) * val_fraction))
        if num_val >= len(order):
            raise UserError(f"--val-fraction {val_fraction} of {len(order)} images leaves none for training; "
                            f"use a smaller fraction or --val-data")
        held = set(order[:num_val])
        val = replace(train, records=[r for i, r in enumerate(train.records) if i in held])
        train = replace(train, records=[r for i, r in enumerate(train.records) if i not in held], unreadable_ids=[])
    if val is not None and val.class_names != train.class_names:
        raise UserError(f"validation classes {val.class_names} differ from training classes {train.class_names}")
    return train, val


def open_recorded(data: DataConfig, split: str = "val", seed: int = 0) -> DatasetIndex:
    """The split a model was trained or validated on, from the data its config records (`fcos eval` without
    --data): its validation file, or the same held-out fraction or val split of its training data."""
    recorded = data.val if split == "val" and data.val else data.train
    if not recorded:
        raise UserError("no --data given, and the weights record no data they were trained on (imported "
                        "weights); pass --data")
    if recorded != "demo" and not Path(recorded).exists():
        raise UserError(f"no --data given, and the data recorded in the weights, {recorded}, no longer exists "
                        f"(paths are relative to where training ran); pass --data")
    if split == "val" and data.val:
        return open_split(data.val, "val", flag="--val-data")
    train, val = open_data(data.train, None, data.val_fraction, seed, data.images)
    if split == "train":
        return train
    if val is None:
        raise UserError(f"no --data given, and the weights were trained on {data.train} without validation data; "
                        f"pass --data (or --split train)")
    return val
