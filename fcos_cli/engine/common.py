"""What the loops share: device choice, autocast, data loaders."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from ..config import FCOSConfig
from ..data.dataset import DetectionDataset, collate
from ..data.records import DatasetIndex
from ..data.transforms import build_transform
from ..errors import UserError
from .stop import ignore_stop_signals

__all__ = ["resolve_device", "autocast", "loader", "next_run_dir", "EpochSampler"]


def resolve_device(device: str) -> torch.device:
    """`auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`; a clear error when CUDA is missing."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"--device {device}: expected auto, cpu, cuda or cuda:N") from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this machine has no CUDA GPU (use --device cpu)")
    return resolved


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CPU, fp16 on CUDA; decoding and losses cast back to float32 themselves."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def loader(index: DatasetIndex, cfg: FCOSConfig, mean: tuple[float, ...], train: bool,
           batch_size: int | None = None, workers: int | None = None, seed: int = 0, num_replicas: int = 1,
           rank: int = 0) -> torch.utils.data.DataLoader:
    """Batches of `Batch`; training shuffles with an `EpochSampler` (call its `set_epoch`) and drops nothing
    on one process."""
    d = cfg.data
    transform = build_transform(d.img_size, train, d.multi_scale, d.hflip, d.color_jitter, d.max_size, d.size_rounding,
                                d.crop)
    workers = cfg.train.workers if workers is None else workers
    dataset = DetectionDataset(index.records, transform, seed=seed)
    batch_size = batch_size or cfg.train.batch_size
    groups = _orientations(index.records) if d.aspect_grouping else None
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed, num_replicas, rank, groups, batch_size) if train else None,
        num_workers=workers, collate_fn=partial(collate, pad_value=mean, size_divisor=cfg.model.size_divisor),
        pin_memory=torch.cuda.is_available(), worker_init_fn=ignore_stop_signals if workers else None,
    )


def _orientations(records) -> list[bool | None]:
    """Per record: landscape (True), portrait (False), or None where the annotations give no size."""
    return [None if r.width is None or r.height is None else r.width >= r.height for r in records]


class EpochSampler(torch.utils.data.Sampler[int]):
    """This rank's share of a permutation seeded by (seed, epoch), optionally from an offset.

    The order is a function of the epoch alone (torch's `DistributedSampler`), so a run resumed in
    the middle of an epoch skips exactly the images it had already trained on. With `groups` (one key per
    image, e.g. its orientation), each run of `batch_size` images shares a key, as detectron2's and mmdetection's
    aspect-ratio grouping; the leftovers come last, in the epoch's order.
    """

    def __init__(self, size: int, seed: int, num_replicas: int = 1, rank: int = 0,
                 groups: list | None = None, batch_size: int = 1) -> None:
        # drop_last with several ranks: each image at most once per epoch, shares of equal length.
        self.base = torch.utils.data.DistributedSampler(range(size), num_replicas, rank, shuffle=True, seed=seed,
                                                        drop_last=num_replicas > 1)
        self.groups, self.batch_size = groups, batch_size
        self.skip = 0

    def _order(self) -> list[int]:
        order = list(self.base)
        if self.groups is None:
            return order
        filling: dict = {}
        batches = []
        for i in order:
            batch = filling.setdefault(self.groups[i], [])
            batch.append(i)
            if len(batch) == self.batch_size:
                batches.append(filling.pop(self.groups[i]))
        grouped = [i for batch in batches for i in batch]
        placed = set(grouped)
        return grouped + [i for i in order if i not in placed]  # the leftovers in the epoch's order

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self._order()), self.skip, None)

    def __len__(self) -> int:
        return len(self.base) - self.skip


def next_run_dir(project: str | Path, name: str, exist_ok: bool = False) -> Path:
    """`project/name`, or `name2`, `name3`, ... when taken (unless `exist_ok`)."""
    base = Path(project) / name
    path, n = base, 1
    while path.exists() and not exist_ok:
        n += 1
        path = base.with_name(f"{name}{n}")
    path.mkdir(parents=True, exist_ok=True)
    return path
