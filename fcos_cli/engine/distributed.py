"""Data-parallel training and evaluation under torchrun: the process group, who writes, and what ranks share."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Ranks", "init_distributed", "close_distributed"]


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics, plots and prints."""
        return self.rank == 0

    def average(self, value: Tensor) -> Tensor:
        """Mean over ranks (a new tensor; no gradient flows through it)."""
        if not self.enabled:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size

    def total(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sums over ranks of a few Python numbers."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is true on one: a step is skipped everywhere at once."""
        return bool(self.max(int(flag), device))

    def max(self, value: int, device: torch.device) -> int:
        """The largest of every rank's `value`, on every rank (e.g. why training stops: 0 where it need not)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def share(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (e.g. the run directory it chose)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's `value` on rank 0, in rank order (None on the other ranks)."""
        if not self.enabled:
            return [value]
        gathered = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every rank: after training steps each rank holds its
        own, and the evaluated and saved model is rank 0's."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. writes a cache), then the others."""
        if self.enabled and not self.is_main:
            dist.barrier()
        yield
        if self.enabled and self.is_main:
            dist.barrier()


def init_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join torchrun's process group when launched by it (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU.

    Each rank takes the GPU of its LOCAL_RANK. Returns the ranks and the device this process uses.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Ranks(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size()), device


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
