"""Image records: what every dataset format is read into before loading pixels.

Boxes are float32 (M, 4) xyxy in original-image pixels; labels int64 (M,) contiguous 0..K-1.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ..errors import UserError
from ..metadata import category_ids_or_default

__all__ = ["ImageRecord", "DatasetIndex", "read_mapping", "safe_join", "image_size", "BoxCheck"]

_EXIF_ORIENTATION = 0x0112
# Reasons a box is dropped while reading annotations: the keys of DatasetIndex.skipped.
ZERO_SIZE, OUTSIDE, NOT_FINITE = ("boxes with zero or negative size", "boxes outside the image",
                                  "boxes with NaN or infinite coordinates")
MISSING_IMAGE, UNREADABLE_IMAGE = "images missing", "images not readable"


def read_mapping(path: Path, parse: Callable[[str], object], kind: str, expected: str) -> dict:
    """An annotation file parsed into a dict; an unreadable, invalid or non-mapping file is one UserError."""
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a {kind} file")
    try:
        data = parse(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not valid {kind}: it is not a text file") from e
    except (ValueError, yaml.YAMLError) as e:  # json.JSONDecodeError is a ValueError
        message = " ".join(str(e).split())  # YAML errors span several lines
        raise UserError(f"{path} is not valid {kind}: {message}") from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected {expected}")
    return data


def safe_join(root: Path, name: str, where: str) -> Path:
    """`root / name` for a relative `name` that stays under `root`: annotation files must not point elsewhere.

    Checked on the text (no symlinks resolved: an image folder may itself be a link).
    """
    text = str(name).replace("\\", "/")
    normal = os.path.normpath(text) if text else ""
    if not text or os.path.isabs(text) or normal == ".." or normal.startswith("../") or text[1:3] == ":/":
        raise UserError(f"{where}: image path {name!r} is not inside the image folder; file names must be "
                        f"relative to it, without '..' or a leading '/'")
    return root / normal


def image_size(path: Path, exif: bool = True) -> tuple[int, int] | str:
    """(width, height) as the image will be loaded (EXIF orientation applied), or why it cannot be read.

    Reads the header only (~80 us; the EXIF orientation doubles that, so `exif=False` skips it when the
    caller already knows the size).
    """
    if not path.is_file():
        return MISSING_IMAGE
    try:
        with Image.open(path) as im:
            width, height = im.size
            if exif and im.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
    except (OSError, ValueError, SyntaxError):
        return UNREADABLE_IMAGE
    return width, height


@dataclass
class BoxCheck:
    """Counts of boxes dropped (zero size, outside, not finite) and clipped while reading one dataset."""

    skipped: Counter = field(default_factory=Counter)
    clipped: int = 0

    def __call__(self, x0: float, y0: float, x1: float, y1: float,
                 width: int | None, height: int | None) -> list[float] | None:
        """The box xyxy clipped to the image, or None (counted) when nothing real is left of it."""
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            self.skipped[NOT_FINITE] += 1
            return None
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            self.skipped[ZERO_SIZE] += 1
            return None
        if width and height:
            cx0, cx1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
            cy0, cy1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
            if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
                self.skipped[OUTSIDE] += 1
                return None
            if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
                self.clipped += 1
            x0, y0, x1, y1 = cx0, cy0, cx1, cy1
        return [x0, y0, x1, y1]


@dataclass
class ImageRecord:
    path: Path
    boxes: np.ndarray  # (M, 4) float32 xyxy, original pixels
    labels: np.ndarray  # (M,) int64, 0..K-1
    image_id: int  # COCO image id (or the index for formats without ids)
    width: int | None = None  # original size when the annotation file knows it
    height: int | None = None
    # Boxes never trained on and evaluated as crowds (a detection on one is neither right nor wrong): VOC's
    # `difficult` objects. (G, 4) float32 xyxy, (G,) int64.
    crowd_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    crowd_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class DatasetIndex:
    """A split of a dataset: its records and the class list (label i is `class_names[i]`).

    `skipped` counts what reading the annotations dropped (reason -> count: boxes of zero size, outside
    the image or not finite; missing or unreadable images), `clipped` the boxes cut to the image, and
    `skipped_files` names the images left out (file, reason). The CLI prints them once per load.
    """

    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int] = field(default_factory=list)  # COCO id of label i (empty: 1..K, filled in)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count of dropped boxes/images
    clipped: int = 0  # boxes partly outside the image, cut to it
    skipped_files: list[tuple[Path, str]] = field(default_factory=list)  # images left out and why
    source: str = ""  # the annotation file, for messages
    # A COCO file is evaluated against itself (crowds, its `area`, its ids): the file, and the ids of its
    # images that could not be read (they count as images without detections). None: YOLO and demo data.
    coco_file: str | None = None
    unreadable_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.category_ids = category_ids_or_default(self.category_ids, len(self.class_names))
