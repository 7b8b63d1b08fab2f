"""What a weights file (safetensors or ONNX) and a training state record beside their tensors, as string metadata.

The only module that names the metadata keys: `WeightsInfo` and `TrainStateInfo` convert to and from the
`{"fcos_cli.<field>": str}` dicts that safetensors and ONNX store. The keys are the field names, so files
written before these types existed read back unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .config import FCOSConfig, from_dict, to_dict
from .errors import UserError
from .version import __version__

__all__ = ["WeightsInfo", "TrainStateInfo", "category_ids_or_default"]

PREFIX = "fcos_cli."
_TEXT = ("version", "checkpoint_id")  # stored as they are; every other value as JSON


def category_ids_or_default(ids: Iterable[int] | None, num_classes: int) -> list[int]:
    """The dataset id of each label 0..K-1: the dataset's own (COCO), else 1..K (YOLO, VOC, the demo)."""
    ids = list(ids or ())
    return ids or list(range(1, num_classes + 1))


def _json_default(value: Any) -> Any:
    """numpy values inside an RNG state (the training state) as plain JSON."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


def _encode(record: Any) -> dict[str, str]:
    metadata = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if value is None:
            continue
        if isinstance(value, FCOSConfig):
            value = to_dict(value)
        metadata[PREFIX + f.name] = value if f.name in _TEXT else json.dumps(value, default=_json_default)
    return metadata


def _decode(cls: type, metadata: Mapping[str, str], source: str) -> dict[str, Any]:
    values = {}
    for f in fields(cls):
        text = metadata.get(PREFIX + f.name)
        if text is None:
            continue
        try:
            values[f.name] = text if f.name in _TEXT else json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{source}: corrupt fcos_cli metadata ({PREFIX}{f.name}: {e})") from e
    return values


@dataclass
class WeightsInfo:
    """Everything a weights file records besides tensors: the file alone rebuilds and labels the model."""

    config: FCOSConfig
    class_names: list[str]  # label i is class_names[i]
    category_ids: list[int] = field(default_factory=list)  # dataset id of label i; empty: 1..K (filled in)
    imported_from: dict[str, Any] | None = None  # `fcos import-weights`: file, source, variant, complete
    epoch: int | None = None  # training progress of last/best.safetensors
    step: int | None = None
    checkpoint_id: str | None = None  # pairs last.safetensors with its training state
    version: str = __version__  # the fcos_cli that wrote the file

    def __post_init__(self) -> None:
        self.category_ids = category_ids_or_default(self.category_ids, len(self.class_names))

    def to_metadata(self) -> dict[str, str]:
        """The safetensors / ONNX metadata, written by this fcos_cli version."""
        return {**_encode(self), PREFIX + "version": __version__}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str) -> WeightsInfo:
        """Read back `to_metadata`; a UserError naming `source` for a file without or with broken metadata."""
        values = _decode(cls, metadata, source)
        if "config" not in values or "class_names" not in values:
            raise UserError(f"{source} has no fcos_cli metadata (config and class names): it was not written by "
                            f"`fcos train`, `fcos import-weights` or `fcos export`")
        values["config"] = from_dict(values["config"])
        return cls(**values)

    def to_onnx(self, proto: Any) -> None:
        """Store into an `onnx.ModelProto`'s metadata_props."""
        for key, value in self.to_metadata().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value

    @classmethod
    def from_onnx(cls, proto: Any, source: str) -> WeightsInfo:
        return cls.from_metadata({p.key: p.value for p in proto.metadata_props}, source)


@dataclass
class TrainStateInfo:
    """The JSON half of a training state file (`--resume`): its tensors are referenced from `train_state`."""

    train_state: dict[str, Any]  # optimizer, scheduler, scaler and RNG states, tensors as {"__tensor__": key}
    epoch: int
    step: int
    best_ap: float
    checkpoint_id: str  # the same as in the weights file written with it
    progress: dict[str, Any] = field(default_factory=dict)  # the position inside an unfinished epoch

    def to_metadata(self) -> dict[str, str]:
        return _encode(self)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str) -> TrainStateInfo:
        values = _decode(cls, metadata, source)
        missing = [f.name for f in fields(cls) if f.name not in values and f.name != "progress"]
        if missing:
            raise UserError(f"cannot resume from {source}: not an fcos_cli training state (no {missing[0]})")
        return cls(**values)
