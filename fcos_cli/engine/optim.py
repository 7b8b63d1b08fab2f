"""The optimizer's parameter groups and the learning-rate schedule (warm-up, then cosine or steps)."""

from __future__ import annotations

import math

import torch

from ..config import TrainConfig, learning_rate

__all__ = ["build_optimizer", "lr_factor"]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                    backbone_lr_mult: float | None = None) -> torch.optim.Optimizer:
    """No weight decay on norms, biases and per-level scales (1-D parameters); frozen parameters left out.

    `backbone_lr_mult` (default: the model's `backbone.lr_mult`, from `BackboneConfig.lr_mult`) scales the
    learning rate of the pretrained timm body; its simple pyramid, the FPN and the head keep `cfg.lr`.
    The scheduler's factor multiplies every group, so the ratio holds through warm-up and decay.
    """
    backbone = getattr(model, "backbone", None)
    mult = backbone_lr_mult if backbone_lr_mult is not None else getattr(backbone, "lr_mult", 1.0)
    body = {id(p) for p in backbone.body.parameters()} if backbone is not None and mult != 1.0 else set()
    lr = learning_rate(cfg)
    groups = []  # the rest first: param_groups[0]["lr"] stays the base rate that metrics.csv logs
    for lr_scale, in_body in ((1.0, False), (mult, True)) if body else ((1.0, False),):
        params = [p for p in model.parameters() if p.requires_grad and (id(p) in body) == in_body]
        groups += [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay,
                    "lr": lr * lr_scale},
                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": lr * lr_scale}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up from 0.1% to 1, then cosine to 1% or x0.1 steps at 2/3 and 8/9 of training."""
    warmup = min(cfg.warmup_steps, max(total // 3, 1))
    if step < warmup:
        return 0.001 + (1 - 0.001) * step / warmup
    if cfg.schedule == "step":
        return 0.1 ** sum(step >= total * f for f in (2 / 3, 8 / 9))
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))
