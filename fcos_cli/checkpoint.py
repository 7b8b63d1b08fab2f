"""Weights as safetensors, with the config and class names in the metadata: the file alone rebuilds the model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .atomic import atomic_write
from .config import FCOSConfig, from_dict, to_dict
from .errors import UserError
from .model import FCOS, build_model

__all__ = ["save", "load", "read_metadata", "CONFIG_KEY", "CLASSES_KEY"]

CONFIG_KEY, CLASSES_KEY, VERSION_KEY = "fcos_cli.config", "fcos_cli.class_names", "fcos_cli.version"


def save(path: str | Path, model: FCOS, cfg: FCOSConfig, class_names: list[str],
         extra: dict[str, str] | None = None) -> Path:
    """Write `model` weights atomically, with the config and class names in the metadata."""
    if len(class_names) != cfg.model.num_classes:
        raise ValueError(f"{len(class_names)} class names for {cfg.model.num_classes} classes")
    path = Path(path)
    # safetensors refuses non-contiguous (channels_last) and shared tensors.
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {CONFIG_KEY: json.dumps(to_dict(cfg)), CLASSES_KEY: json.dumps(class_names),
                VERSION_KEY: __version__, **(extra or {})}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_metadata(path: str | Path) -> tuple[FCOSConfig, list[str], dict[str, str]]:
    """Config, class names and raw metadata of a weights file; a clear UserError for any other file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e}); fcos_cli weights are "
                        f"written by `fcos train` or `fcos import-weights`") from None
    if CONFIG_KEY not in metadata or CLASSES_KEY not in metadata:
        raise UserError(f"{path} is a safetensors file without fcos_cli metadata (config and class names); "
                        f"it was not written by fcos_cli")
    try:
        cfg, names = from_dict(json.loads(metadata[CONFIG_KEY])), json.loads(metadata[CLASSES_KEY])
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: corrupt fcos_cli metadata ({e})") from None
    return cfg, names, metadata


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[FCOS, FCOSConfig, list[str]]:
    """Rebuild the model from the file alone (no pretrained download) and load its weights."""
    cfg, names, _ = read_metadata(path)
    model = build_model(cfg.model, load_pretrained=False)  # the file holds every weight
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the weights ({e}); the file may be truncated") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    misshapen = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or misshapen:
        raise UserError(f"{path}: weights do not fit the model in its metadata "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {sorted(misshapen)[:3]})")
    model.load_state_dict(state)
    return model.to(device).eval(), cfg, names
