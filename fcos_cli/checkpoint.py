"""Weights as safetensors, with a `WeightsInfo` (config, class names, ...) in the metadata: the file alone
rebuilds the model."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_write
from .config import FCOSConfig
from .errors import UserError
from .metadata import WeightsInfo
from .model import FCOS, build_model

__all__ = ["save", "load", "read_info"]


def save(path: str | Path, model: FCOS, info: WeightsInfo) -> Path:
    """Write `model` weights atomically, with `info` in the metadata."""
    if len(info.class_names) != info.config.model.num_classes:
        raise ValueError(f"{len(info.class_names)} class names for {info.config.model.num_classes} classes")
    path = Path(path)
    # safetensors refuses non-contiguous (channels_last) and shared tensors.
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=info.to_metadata())
    return path


def read_info(path: str | Path) -> WeightsInfo:
    """What a weights file records (config, class names, ...); a clear UserError for any other file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}); fcos_cli weights are "
                        f"written by `fcos train` or `fcos import-weights`") from e
    return WeightsInfo.from_metadata(metadata, str(path))


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[FCOS, FCOSConfig, list[str]]:
    """Rebuild the model from the file alone (no pretrained download) and load its weights."""
    info = read_info(path)
    cfg, names = info.config, info.class_names
    model = build_model(cfg.model, load_pretrained=False)  # the file holds every weight
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the weights ({e}); the file may be truncated") from e
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    misshapen = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or misshapen:
        raise UserError(f"{path}: weights do not fit the model in its metadata "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {sorted(misshapen)[:3]})")
    model.load_state_dict(state)
    return model.to(device).eval(), cfg, names
