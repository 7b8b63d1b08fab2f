"""Image records: what every dataset format is read into before loading pixels.

Boxes are float32 (M, 4) xyxy in original-image pixels; labels int64 (M,) contiguous 0..K-1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import UserError

__all__ = ["ImageRecord", "DatasetIndex", "read_mapping"]


def read_mapping(path: Path, parse: Callable[[str], object], kind: str, expected: str) -> dict:
    """An annotation file parsed into a dict; an unreadable, invalid or non-mapping file is one UserError."""
    try:
        data = parse(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, yaml.YAMLError) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{path} is not valid {kind}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected {expected}")
    return data


@dataclass
class ImageRecord:
    path: Path
    boxes: np.ndarray  # (M, 4) float32 xyxy, original pixels
    labels: np.ndarray  # (M,) int64, 0..K-1
    image_id: int  # COCO image id (or the index for formats without ids)
    width: int | None = None  # original size when the annotation file knows it
    height: int | None = None


@dataclass
class DatasetIndex:
    """A split of a dataset: its records and the class list (label i is `class_names[i]`)."""

    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int] = field(default_factory=list)  # COCO id of label i (empty: 1..K)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count of dropped boxes/images
