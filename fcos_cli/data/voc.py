"""Pascal VOC XML: `Annotations/*.xml`, `JPEGImages/`, and `ImageSets/Main/{train,val}.txt` listing each split.

`--data` is the VOC root (the split's ImageSets file) or one ImageSets .txt (the file is the split). Classes
are the sorted object names over every annotation file, so both splits agree (the 20 VOC classes come out in
their usual order). VOC's pixel coordinates are 1-based: xmin and ymin lose 1 (as detectron2 and mmdet do),
xmax and ymax stay. `difficult` objects are not trained on and are evaluated as crowds (ignored).
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import UserError
from .records import MISSING_IMAGE, BoxCheck, DatasetIndex, ImageRecord, image_size, safe_join

__all__ = ["load_voc", "detect", "has_val", "load"]


def _is_root(path: Path) -> bool:
    return path.is_dir() and (path / "Annotations").is_dir() and (path / "ImageSets" / "Main").is_dir()


def _is_list(path: Path) -> bool:
    return (path.suffix == ".txt" and path.is_file() and path.parent.name == "Main" and len(path.parents) > 2
            and _is_root(path.parents[2]))


def detect(path: Path) -> bool:
    return _is_root(path) or _is_list(path)


def has_val(path: Path) -> bool:
    return path.is_dir()  # a root has ImageSets/Main/val.txt; an ImageSets file is one split


def load(path: Path, split: str, images_dir: str | Path | None = None) -> DatasetIndex:
    return load_voc(path, split)


def _parse(xml: Path) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise UserError(f"{xml} is not valid XML: {e}") from e
    except OSError as e:
        raise UserError(f"cannot read {xml}: {e.strerror}") from e


def _name(obj: ET.Element, xml: Path) -> str:
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise UserError(f"{xml}: an <object> without a <name>")
    return name


@functools.lru_cache(maxsize=8)  # train and val of one root: parsed once
def _class_names(root: Path) -> list[str]:
    xmls = sorted((root / "Annotations").glob("*.xml"))
    names = {_name(obj, xml) for xml in xmls for obj in _parse(xml).iter("object")}
    if not names:
        raise UserError(f"{root / 'Annotations'}: no <object> with a <name> in any annotation file")
    return sorted(names)


def _number(obj: ET.Element, tag: str, xml: Path) -> float:
    try:
        return float(obj.findtext(f"bndbox/{tag}") or "")
    except ValueError as e:
        raise UserError(f"{xml}: object {obj.findtext('name')!r} has no number in <bndbox><{tag}>") from e


def _size(annotation: ET.Element) -> tuple[int, int] | None:
    try:
        width, height = int(annotation.findtext("size/width") or 0), int(annotation.findtext("size/height") or 0)
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def load_voc(path: str | Path, split: str = "train") -> DatasetIndex:
    """Records of one split: `path` is a VOC root (its ImageSets/Main/`split`.txt) or an ImageSets .txt."""
    path = Path(path)
    listing = path / "ImageSets" / "Main" / f"{split}.txt" if path.is_dir() else path
    root = path if path.is_dir() else path.parents[2]
    if not listing.is_file():
        raise UserError(f"{path}: no {listing.relative_to(root)} (the image ids of the {split} split)")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"{listing}: lists no image ids")
    names = _class_names(root)
    label_of = {name: i for i, name in enumerate(names)}
    check, crowd_check, skipped_files, records = BoxCheck(), BoxCheck(), [], []
    for image_id in ids:
        xml = safe_join(root / "Annotations", f"{image_id}.xml", str(listing))
        if not xml.is_file():
            raise UserError(f"{listing}: lists {image_id!r} but {xml} does not exist")
        annotation = _parse(xml)
        image = safe_join(root / "JPEGImages", (annotation.findtext("filename") or f"{image_id}.jpg").strip(),
                          str(xml))
        size = image_size(image, exif=_size(annotation) is None)
        if isinstance(size, str):
            check.skipped[size] += 1
            skipped_files.append((image, "missing" if size == MISSING_IMAGE else "not a readable image"))
            continue
        width, height = _size(annotation) or size
        kept: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}  # difficult -> (boxes, labels)
        for obj in annotation.iter("object"):
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            x0, y0, x1, y1 = (_number(obj, tag, xml) for tag in ("xmin", "ymin", "xmax", "ymax"))
            box = (crowd_check if difficult else check)(x0 - 1, y0 - 1, x1, y1, width, height)
            if box is not None:
                kept[difficult][0].append(box)
                kept[difficult][1].append(label_of[_name(obj, xml)])
        (boxes, labels), (crowd_boxes, crowd_labels) = kept[False], kept[True]
        records.append(ImageRecord(image, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                                   len(records), width, height, np.array(crowd_boxes, np.float32).reshape(-1, 4),
                                   np.array(crowd_labels, np.int64)))
    if not records:
        raise UserError(f"{listing}: none of its {len(ids)} images can be read (first: {skipped_files[0][0]}, "
                        f"{skipped_files[0][1]})")
    return DatasetIndex(records, names, [], dict(check.skipped), check.clipped, skipped_files, str(listing))
