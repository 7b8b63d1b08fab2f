"""Training state for `--resume` as safetensors (tensors + JSON metadata): never a pickle."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..atomic import atomic_write
from ..errors import UserError
from ..metadata import TrainStateInfo

__all__ = ["state_path", "save_state", "load_state"]


def state_path(weights: Path) -> Path:
    """`last.safetensors` -> `last.state.safetensors`."""
    return weights.with_name(weights.name.removesuffix(".safetensors") + ".state.safetensors")


def _split(tree, prefix: str, tensors: dict[str, torch.Tensor]):
    """Move every tensor of a nested dict/list into `tensors`, leaving a JSON-able tree of references."""
    if isinstance(tree, torch.Tensor):
        tensors[prefix] = tree.detach().contiguous().clone().cpu()
        return {"__tensor__": prefix}
    if isinstance(tree, dict):
        return {str(k): _split(v, f"{prefix}.{k}", tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(tree)]
    return tree


def _join(tree, tensors: dict[str, torch.Tensor]):
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        return {k: _join(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    return tree


def _int_keys(state: dict) -> dict:
    """JSON turned the optimizer's integer parameter ids into strings: turn them back."""
    return {**state, "state": {int(k): v for k, v in state["state"].items()}}


def _previous(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".safetensors") + ".prev.safetensors")


def save_state(path: Path, model: torch.nn.Module, optimizer, scheduler, scaler, epoch: int, step: int,
               best_ap: float, checkpoint_id: str, progress: dict | None = None) -> None:
    """Raw model weights, optimizer, scheduler, AMP scaler and RNG states, written atomically.

    The state is written before its weights file; the one before it is kept as `*.prev.safetensors`
    so that a kill between the two writes still leaves a matching (weights, state) pair.
    `progress` (JSON) holds the position inside an unfinished epoch.
    """
    tensors: dict[str, torch.Tensor] = {}
    tree = {
        "model": _split(model.state_dict(), "model", tensors),
        "optimizer": _split(optimizer.state_dict(), "optimizer", tensors),
        "scheduler": _split(scheduler.state_dict(), "scheduler", tensors),
        "scaler": _split(scaler.state_dict(), "scaler", tensors),
        "rng_torch": _split(torch.get_rng_state(), "rng_torch", tensors),
        "rng_python": random.getstate(),
        "rng_numpy": _split({k: v for k, v in zip(("kind", "keys", "pos", "has_gauss", "gauss"),
                                                  np.random.get_state(), strict=True)}, "rng_numpy", tensors),
    }
    metadata = TrainStateInfo(tree, epoch, step, best_ap, checkpoint_id, progress or {}).to_metadata()
    if path.is_file():
        os.replace(path, _previous(path))
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"cannot resume from {path}: unreadable ({e})") from e


def load_state(path: Path, model: torch.nn.Module, optimizer, scheduler, scaler,
               checkpoint_id: str | None) -> tuple[int, int, float, dict]:
    """Restore the state that belongs to the weights with `checkpoint_id` (this file or the one before).

    Returns (epoch, step, best_ap, progress) of that checkpoint.
    """
    candidates = [p for p in (path, _previous(path)) if p.is_file()]
    if not candidates:
        raise UserError(f"cannot resume: the training state {path} is missing (it is written beside last.safetensors)")
    for candidate in candidates:
        metadata, tensors = _read(candidate)
        info = TrainStateInfo.from_metadata(metadata, str(candidate))
        if checkpoint_id is None or info.checkpoint_id == checkpoint_id:
            break
    else:
        raise UserError(f"cannot resume: {path} is from another checkpoint than its weights file "
                        f"(step {info.step}); the pair does not match")
    tree = _join(info.train_state, tensors)
    try:
        model.load_state_dict(tree["model"])
        optimizer.load_state_dict(_int_keys(tree["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"cannot resume from {path}: it does not fit this model/optimizer ({e})") from e
    scheduler.load_state_dict(tree["scheduler"])
    scaler.load_state_dict(tree["scaler"])
    torch.set_rng_state(tree["rng_torch"])
    version, state, gauss = tree["rng_python"]
    random.setstate((version, tuple(state), gauss))
    n = tree["rng_numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    return info.epoch, info.step, float(info.best_ap), info.progress
