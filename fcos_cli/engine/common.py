"""What the loops share: device choice, autocast, data loaders."""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path

import torch

from ..data.dataset import DetectionDataset, collate
from ..data.records import DatasetIndex
from ..data.transforms import build_transform
from ..config import FCOSConfig
from ..errors import UserError

__all__ = ["resolve_device", "autocast", "loader", "next_run_dir"]


def resolve_device(device: str) -> torch.device:
    """`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`; a clear error when CUDA is missing."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: expected auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this machine has no CUDA GPU (use --device cpu)")
    return resolved


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CPU, fp16 on CUDA; decoding and losses cast back to float32 themselves."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def loader(index: DatasetIndex, cfg: FCOSConfig, mean: tuple[float, ...], train: bool,
           batch_size: int | None = None, workers: int | None = None, seed: int = 0) -> torch.utils.data.DataLoader:
    """Batches of `Batch`; training shuffles with a seeded generator and drops nothing."""
    d = cfg.data
    transform = build_transform(d.img_size, train, d.multi_scale, d.hflip, d.color_jitter)
    workers = cfg.train.workers if workers is None else workers
    return torch.utils.data.DataLoader(
        DetectionDataset(index.records, transform), batch_size=batch_size or cfg.train.batch_size, shuffle=train,
        num_workers=workers, collate_fn=partial(collate, pad_value=mean, size_divisor=cfg.model.size_divisor),
        generator=torch.Generator().manual_seed(seed) if train else None, pin_memory=torch.cuda.is_available(),
    )


def next_run_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """`project/name`, or `name2`, `name3`, ... when taken (unless `exist_ok`)."""
    base = Path(project) / name
    path, n = base, 1
    while path.exists() and not exist_ok:
        n += 1
        path = base.with_name(f"{name}{n}")
    path.mkdir(parents=True, exist_ok=True)
    return path
