"""The training loop: one config and data indexes in, a run directory with weights, metrics and plots out."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .. import checkpoint
from ..atomic import atomic_write
from ..config import FCOSConfig, TrainConfig, learning_rate, resolve, to_dict
from ..data.records import DatasetIndex
from ..errors import UserError
from ..losses import FCOSLosses
from ..model import FCOS, build_model
from ..model.optimize import speed_up_training
from ..pipeline import loss_for
from .common import autocast, loader
from .distributed import Ranks
from .evaluate import EvalResult, evaluate
from .state import load_state, save_state, state_path
from .stop import TIME_LIMIT, TimeBudget, TrainingInterrupted, start_workers, stop_on_signals

__all__ = ["TrainResult", "TrainingInterrupted", "TrainingDiverged", "train", "build_optimizer", "lr_factor", "finetune_model"]

LOSS_NAMES = ("loss", "cls", "box", "centerness")
RANK_LOG_HOOK = "FCOS_CLI_TEST_RANK_LOG"  # test-only: each rank writes its final weights and image ids there


@dataclass
class TrainResult:
    run_dir: Path
    last: Path
    best: Path
    final: EvalResult | None
    best_ap: float
    seconds: float
    skipped_steps: int = 0  # steps without an update (non-finite loss or gradients)


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


def finetune_model(weights: Path, cfg: FCOSConfig, class_names: list[str]) -> tuple[FCOS, list[str]]:
    """A model for `cfg` started from another detector's weights: every tensor whose name and shape fit.

    A different class set re-initialises the class logits (fine-tuning); a different backbone is an error.
    Returns the model and a report of what was and was not loaded.
    """
    source_cfg, source_names, _ = checkpoint.read_metadata(weights)
    if source_cfg.model.backbone.name != cfg.model.backbone.name:
        raise UserError(f"--weights {weights} has backbone {source_cfg.model.backbone.name!r} but --backbone is "
                        f"{cfg.model.backbone.name!r}; pass --backbone {source_cfg.model.backbone.name}")
    source, _, _ = checkpoint.load(weights)
    # The input the source was trained on travels with it (e.g. an imported caffe-style detector).
    for name in ("pixel_mean", "pixel_std", "channel_order", "stride_in_1x1"):
        setattr(cfg.model, name, getattr(source_cfg.model, name))
    cfg.model.num_classes = len(class_names)
    model = build_model(cfg.model, load_pretrained=False, backbone_trained=True)  # the detector's weights follow
    own = model.state_dict()
    fits = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    if source_names != class_names:
        fits = {k: v for k, v in fits.items() if not k.startswith("head.cls_logits.")}
    model.load_state_dict(fits, strict=False)
    report = [f"loaded {len(fits)}/{len(own)} tensors from {weights}"]
    if source_names != class_names:
        report.append(f"classes differ ({len(source_names)} -> {len(class_names)}): class logits re-initialised")
    left = sorted(set(own) - set(fits))
    if left:
        report.append(f"not loaded: {', '.join(left[:6])}{' ...' if len(left) > 6 else ''}")
    return model, report


def _number(text: str) -> float | int | str:
    if not text:
        return text
    return float(text) if any(c in text for c in ".eEn") else int(text)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _plot(rows: list[dict], path: Path) -> None:
    """Loss terms and validation AP per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in LOSS_NAMES:
        left.plot(epochs, [r[name] for r in rows], label=name)
    left.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Losses")
    left.legend()
    evaluated = [r for r in rows if r.get("AP") not in (None, "")]
    for name in ("AP", "AP50"):
        if evaluated:
            right.plot([r["epoch"] for r in evaluated], [r[name] for r in evaluated], marker="o", label=name)
    right.set(xlabel="epoch", ylabel="COCO metric", ylim=(0, 1), title="Validation")
    if evaluated:
        right.legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _write_csv(rows: list[dict], path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        fields = list(dict.fromkeys(k for row in rows for k in row))  # evaluated epochs add metric columns
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


class TrainingDiverged(UserError):
    """Too many non-finite steps in a row: no update was made from them, the last checkpoint is intact."""


def _step(net: torch.nn.Module, model: FCOS, batch, cfg: FCOSConfig, device: torch.device, optimizer, scaler,
          ranks: Ranks) -> FCOSLosses | None:
    """Forward, loss, backward and update; None (and no update at all) when the loss or gradients are not finite.

    `net` is `model` or its DistributedDataParallel wrapper; with several ranks the loss normalisers are
    averaged over them and a non-finite loss on any rank skips the step on all (no rank waits alone).
    """
    tc = cfg.train
    images = batch.images.to(device, non_blocking=True)
    boxes = [t["boxes"].to(device) for t in batch.targets]
    labels = [t["labels"].to(device) for t in batch.targets]
    with autocast(device, tc.amp):
        outputs = net(images)
    losses = loss_for(outputs, model.strides, boxes, labels, cfg,
                      average_normalizer=ranks.average if ranks.enabled else None)
    optimizer.zero_grad(set_to_none=True)
    if ranks.any(not torch.isfinite(losses.total), device):
        return None
    scaler.scale(losses.total).backward()
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
    if not scaler.is_enabled() and not torch.isfinite(norm):
        return None
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    # fp16: the scaler skipped an overflowing step itself and lowered its scale; count it as skipped too.
    return None if scaler.get_scale() < scale else losses


def train(cfg: FCOSConfig, train_index: DatasetIndex, val_index: DatasetIndex | None, run_dir: Path,
          device: torch.device, model: FCOS | None = None, console: Console | None = None,
          progress: bool = True, resume: Path | None = None,
          on_epoch_end: Callable[[dict], None] | None = None, ranks: Ranks = Ranks()) -> TrainResult:
    """Train `cfg.train.epochs` epochs, evaluating on `val_index` after each; write `run_dir` files.

    `model` starts from given weights (fine-tuning); `resume` (a `last.safetensors` of this run) restores
    the model, optimizer, scheduler, scaler, RNG states, epoch, step and the position inside an epoch.
    SIGINT (Ctrl-C) or SIGTERM, or `cfg.train.time_limit` seconds about to run out, finish the current step,
    save `last.safetensors` and raise `TrainingInterrupted`;
    `cfg.train.max_nonfinite_steps` non-finite steps in a row raise `TrainingDiverged`.
    Under torchrun (`ranks` from `init_distributed`) each rank trains on its share of every epoch and
    the ranks predict their shares of the validation images; rank 0 alone scores them and writes `run_dir`.
    """
    console = console or Console()
    tc = cfg.train
    if not train_index.records:
        raise UserError("the training split has no images")
    _seed_everything(tc.seed)
    class_names = train_index.class_names
    cfg.model.num_classes = len(class_names)
    resolve(cfg)  # what the None fields mean here, recorded in config.json and the weights
    if model is None:
        model = build_model(cfg.model, load_pretrained=resume is None)  # a resumed run loads its own weights
    model = speed_up_training(model.to(device))  # channels_last: same names and results
    if tc.grad_checkpoint:
        whole = model.set_grad_checkpointing(True)
        console.print("gradient checkpointing: " + ("backbone stages and head towers" if whole else
                      f"head towers only (timm's {cfg.model.backbone.name} has no gradient checkpointing)"))
    net = torch.nn.parallel.DistributedDataParallel(model) if ranks.enabled else model
    if tc.compile:
        net.compile()  # the DDP wrapper, so that dynamo splits the graph at gradient buckets and all-reduce overlaps
    writes = ranks.is_main
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(run_dir / "config.json") as tmp:
            tmp.write_text(json.dumps(to_dict(cfg), indent=2))
    data = loader(train_index, cfg, model.backbone.mean, train=True, seed=tc.seed, num_replicas=ranks.world_size,
                  rank=ranks.rank)
    images_seen = {} if os.environ.get(RANK_LOG_HOOK) else None
    steps_per_epoch = len(data)
    total_steps = tc.epochs * steps_per_epoch
    optimizer = build_optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, tc))
    scaler = torch.amp.GradScaler(device.type, enabled=tc.amp and device.type == "cuda")
    ema = None
    if tc.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=0.9998, use_warmup=True)
    eval_model = ema.module if ema is not None else model
    rows: list[dict] = []
    best_ap, final, start, first_epoch, step, position = -1.0, None, time.perf_counter(), 1, 0, {}
    last, best = run_dir / "last.safetensors", run_dir / "best.safetensors"
    # The dataset's own category ids (COCO), so that predictions map back to them.
    extra = {"fcos_cli.category_ids": json.dumps(train_index.category_ids or list(range(1, len(class_names) + 1)))}
    if resume is not None:
        _, _, metadata = checkpoint.read_metadata(resume)
        epoch, step, best_ap, position = load_state(state_path(resume), model, optimizer, scheduler, scaler,
                                                    metadata.get("fcos_cli.checkpoint_id"))
        if ema is not None:
            ema.module.load_state_dict(checkpoint.load(resume)[0].state_dict())
        first_epoch = epoch + 1
        if (run_dir / "metrics.csv").is_file():
            with open(run_dir / "metrics.csv") as f:
                rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)][:epoch]

    val_batches = math.ceil(len(val_index.records) / tc.batch_size) if val_index is not None else 0
    budget = TimeBudget(tc.time_limit, start, val_batches)

    def save_last(epoch_done: int, position: dict) -> None:
        """State first, then weights: a kill between the two leaves the previous pair (see `save_state`)."""
        began = time.perf_counter()
        checkpoint_id = f"{epoch_done}-{step}-{uuid.uuid4().hex[:8]}"  # pairs the weights with their state
        save_state(state_path(last), model, optimizer, scheduler, scaler, epoch_done, step, best_ap, checkpoint_id,
                   position)
        checkpoint.save(last, eval_model, cfg, class_names, extra={**extra, "fcos_cli.checkpoint_id": checkpoint_id,
                                                                   "fcos_cli.epoch": str(epoch_done),
                                                                   "fcos_cli.step": str(step)})
        budget.saved(time.perf_counter() - began)

    columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ips]:.1f} img/s"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not (progress and writes), transient=False) as bar, \
            stop_on_signals() as signalled:

        def stop_cause(epoch_ends: bool) -> int:
            """Why to stop at this boundary (0: go on), the same on every rank: a signal, else the time budget
            (no room for the next step, the epoch's last if `epoch_ends`, and what follows it)."""
            return ranks.max(signalled() or (TIME_LIMIT if budget.exhausted(epoch_ends) else 0), device)

        for epoch in range(first_epoch, tc.epochs + 1):
            model.train()
            done = position.get("batches_done", 0) if epoch == first_epoch else 0
            resumed = done and writes  # the saved loss sums are rank 0's, which sums every rank's at epoch end
            sums = position["sums"] if resumed else dict.fromkeys(LOSS_NAMES, 0.0)
            seen = position["seen"] if resumed else 0
            skipped, nonfinite_run = (position.get(k, 0) if done else 0 for k in ("skipped", "nonfinite_run"))
            data.sampler.set_epoch(epoch, skip=done * tc.batch_size)
            data.dataset.epoch = epoch  # augmentation seeds are a function of (seed, epoch, image)
            task = bar.add_task("train", total=steps_per_epoch, completed=done, epoch=f"{epoch}/{tc.epochs}",
                                loss=sums["loss"] / max(seen, 1), ips=0.0)
            epoch_start, seen_before = time.perf_counter(), seen
            for batch in start_workers(data):  # no name kept for the iterator: an exception frees its workers
                if images_seen is not None:
                    images_seen.setdefault(epoch, []).extend(m.image_id for m in batch.metas)
                losses = _step(net, model, batch, cfg, device, optimizer, scaler, ranks)
                if losses is None:
                    skipped, nonfinite_run = skipped + 1, nonfinite_run + 1
                    if nonfinite_run >= tc.max_nonfinite_steps:
                        kept = f"; the last good checkpoint is {last}" if last.is_file() else ""
                        raise TrainingDiverged(f"training diverged: {nonfinite_run} non-finite losses or gradients "
                                               f"in a row (step {step + 1}); lower --lr or turn on --grad-clip{kept}")
                else:
                    nonfinite_run = 0
                    if ema is not None:
                        ema.update(model, step=step)
                    values = torch.stack([losses.total, losses.cls, losses.box, losses.centerness]).detach()
                    for name, value in zip(LOSS_NAMES, values.tolist()):  # one sync, not four
                        sums[name] += value * len(batch.images)
                    seen += len(batch.images)
                scheduler.step()
                step, done = step + 1, done + 1
                bar.update(task, advance=1, loss=sums["loss"] / max(seen, 1),
                           ips=(seen - seen_before) / max(time.perf_counter() - epoch_start, 1e-9))
                budget.lap("step")
                if done < steps_per_epoch and (cause := stop_cause(epoch_ends=done + 1 == steps_per_epoch)):
                    if writes:
                        save_last(epoch - 1, {"batches_done": done, "sums": sums, "seen": seen, "skipped": skipped,
                                              "nonfinite_run": nonfinite_run})
                    raise TrainingInterrupted(last, epoch, step, cause)
            *totals, seen = ranks.total([*sums.values(), seen], device)  # every rank's images
            sums = dict(zip(sums, totals))
            evaluated = None
            if val_index is not None and val_index.records and (epoch % tc.eval_interval == 0 or epoch == tc.epochs):
                ranks.sync_buffers(eval_model)  # every rank predicts its share with rank 0's model
                evaluated = evaluate(eval_model, cfg, val_index, device, batch_size=tc.batch_size, amp=tc.amp,
                                     ranks=ranks)
            if not writes:
                budget.lap("end")
                if epoch < tc.epochs and (cause := stop_cause(epoch_ends=steps_per_epoch == 1)):
                    raise TrainingInterrupted(last, epoch, step, cause)
                continue
            row = {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
                   **{k: v / max(seen, 1) for k, v in sums.items()}, "skipped_steps": skipped}
            if evaluated is not None:
                final = evaluated
                row.update(final.metrics)
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            # Metrics before weights: a resume truncates them to the checkpoint's epoch, never leaves a gap.
            _write_csv(rows, run_dir / "metrics.csv")
            _plot(rows, run_dir / "curves.png")
            if val_index is None or row.get("AP", -1.0) > best_ap:
                best_ap = row.get("AP", best_ap)
                checkpoint.save(best, eval_model, cfg, class_names, extra={**extra, "fcos_cli.epoch": str(epoch)})
            save_last(epoch, {})
            if "AP" in row:
                console.print(f"epoch {epoch}: loss {row['loss']:.3f}  AP {row['AP']:.3f}  AP50 {row['AP50']:.3f}")
            if skipped:
                console.print(f"epoch {epoch}: {skipped} steps skipped (non-finite loss or gradients)")
            if on_epoch_end is not None:
                on_epoch_end(row)
            budget.lap("end")
            if epoch < tc.epochs and (cause := stop_cause(epoch_ends=steps_per_epoch == 1)):
                raise TrainingInterrupted(last, epoch, step, cause)
    if images_seen is not None:
        _write_rank_log(Path(os.environ[RANK_LOG_HOOK]), ranks.rank, model, images_seen)
    return TrainResult(run_dir, last, best, final, best_ap, time.perf_counter() - start,
                       sum(int(r.get("skipped_steps") or 0) for r in rows))


def _write_rank_log(folder: Path, rank: int, model: FCOS, images_seen: dict[int, list[int]]) -> None:
    """Test-only (`FCOS_CLI_TEST_RANK_LOG`): this rank's weights and the image ids it trained on, per epoch."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / f"rank{rank}.safetensors") as tmp:
        save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"images_seen": json.dumps(images_seen)})
