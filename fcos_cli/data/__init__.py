"""Datasets: the table of `--data` formats (demo, COCO, Pascal VOC, YOLO), read into `DatasetIndex` records."""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..config import DataConfig
    from .records import DatasetIndex

__all__ = ["DataFormat", "FORMATS", "DATA_HELP", "format_of", "open_data", "open_split", "open_recorded"]


@dataclass(frozen=True)
class DataFormat:
    """One `--data` format. Its module (imported on first use, so that `--help` stays light) defines
    `detect(path) -> bool`, `has_val(path) -> bool` (the data carries its own val split; else --val-data or
    --val-fraction) and `load(path, split, images_dir) -> DatasetIndex`."""

    name: str
    help: str  # how help and error texts name it
    module: str  # under fcos_cli.data

    @property
    def reader(self) -> ModuleType:
        return importlib.import_module(f"{__name__}.{self.module}")


# Tried in this order: `demo` before any folder of that name, VOC roots before other folders (YOLO).
FORMATS = (
    DataFormat("demo", "the built-in, offline 'demo'", "synthetic"),
    DataFormat("coco", "a COCO .json", "coco"),
    DataFormat("voc", "a Pascal VOC root or ImageSets .txt", "voc"),
    DataFormat("yolo", "a YOLO data.yaml", "yolo"),
)
DATA_HELP = ", ".join(f.help for f in FORMATS[:-1]) + f", or {FORMATS[-1].help}"


def format_of(data: str | Path, flag: str = "--data") -> DataFormat:
    """The format of a `--data` value; `flag` names the option in error messages."""
    path = Path(data)
    for fmt in FORMATS:
        if fmt.reader.detect(path):
            return fmt
    if not path.exists():
        raise UserError(f"{flag} {data}: no such file or directory (give {DATA_HELP})")
    raise UserError(f"{flag} {data}: expected {DATA_HELP}")


def open_split(data: str | Path, split: str = "train", images_dir: str | Path | None = None,
               flag: str = "--data") -> DatasetIndex:
    """One split of a dataset in any of `FORMATS` (of a COCO .json or a VOC ImageSets .txt: the file).

    `flag` names the option the path came from in error messages.
    """
    if split not in ("train", "val"):
        raise UserError(f"split {split!r}: expected train or val")
    return format_of(data, flag).reader.load(Path(data), split, images_dir)


def open_data(data: str | Path, val_data: str | Path | None = None, val_fraction: float = 0.0,
              seed: int = 0, images_dir: str | Path | None = None) -> tuple[DatasetIndex, DatasetIndex | None]:
    """Train and validation indexes: demo, YOLO and VOC roots carry their val split; a COCO file (or a VOC
    ImageSets .txt) needs `val_data` or `val_fraction` (a seeded split of its images)."""
    train = open_split(data, "train", images_dir)
    if val_data is not None:
        val = open_split(val_data, "val", flag="--val-data")
    elif format_of(data).reader.has_val(Path(data)):
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
