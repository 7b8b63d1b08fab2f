"""The training loop: one config and data indexes in, a run directory with weights, metrics and plots out.

Read as DETR's `engine.py`: `train` calls `prepare`, `restore` (a resumed run), then `train_one_epoch` and
`end_of_epoch` in turn. Progress and lines to print go to `TrainCallbacks` (the CLI draws them); no printing here.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import checkpoint
from ..atomic import atomic_write
from ..config import FCOSConfig, resolve, to_dict
from ..data.records import DatasetIndex
from ..errors import UserError
from ..losses import FCOSLosses
from ..metadata import WeightsInfo
from ..model import FCOS, build_model
from ..model.optimize import speed_up_training
from ..pipeline import loss_for
from .common import autocast, loader
from .distributed import Ranks
from .evaluate import EvalResult, evaluate
from .history import LOSS_NAMES, plot_history, read_history, write_history
from .optim import build_optimizer, lr_factor
from .state import load_state, save_state, state_path
from .stop import TIME_LIMIT, TimeBudget, TrainingInterrupted, start_workers, stop_on_signals

if TYPE_CHECKING:
    from timm.utils import ModelEmaV3

__all__ = ["TrainResult", "TrainCallbacks", "TrainingInterrupted", "TrainingDiverged", "train", "prepare", "restore",
           "train_one_epoch", "end_of_epoch", "build_optimizer", "lr_factor", "finetune_model"]

@dataclass
class TrainResult:
    run_dir: Path
    last: Path
    best: Path
    final: EvalResult | None
    best_ap: float
    seconds: float
    skipped_steps: int = 0  # steps without an update (non-finite loss or gradients)


class TrainCallbacks:
    """What the loop reports on rank 0, for a progress bar and printed lines; here each does nothing."""

    def epoch_started(self, epoch: int, steps: int, done: int, loss: float) -> None:
        """`epoch` of `steps` steps begins; `done` of them ran before a resume, at mean loss `loss`."""

    def step_done(self, loss: float, images_per_s: float) -> None:
        """One more step: the epoch's mean loss so far and its images per second."""

    def epoch_ended(self, row: dict) -> None:
        """The epoch's metrics.csv row (losses, `skipped_steps`, COCO metrics when evaluated), after its saves."""


@dataclass
class EpochTally:
    """An epoch's running totals; a checkpoint saved inside the epoch stores them as its position."""

    batches_done: int = 0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOSS_NAMES, 0.0))  # loss x images
    seen: int = 0  # images with a finite loss
    skipped: int = 0
    nonfinite_run: int = 0  # skipped steps in a row

    @classmethod
    def resumed(cls, position: dict, is_main: bool) -> EpochTally:
        """The totals saved at `position` (empty: a fresh epoch). The loss sums are rank 0's own, to which the
        epoch's end adds every rank's: the other ranks start theirs again."""
        if not position.get("batches_done"):
            return cls()
        losses = {"sums": position["sums"], "seen": position["seen"]} if is_main else {}
        return cls(position["batches_done"], skipped=position.get("skipped", 0),
                   nonfinite_run=position.get("nonfinite_run", 0), **losses)

    @property
    def mean_loss(self) -> float:
        return self.sums["loss"] / max(self.seen, 1)


@dataclass
class Run:
    """A training run between steps: what it trains and with what, how far it got, where it writes."""

    cfg: FCOSConfig
    model: FCOS
    net: torch.nn.Module  # `model`, or its DistributedDataParallel wrapper; compiled with `train.compile`
    ema: ModelEmaV3 | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    data: torch.utils.data.DataLoader
    device: torch.device
    ranks: Ranks
    run_dir: Path
    class_names: list[str]
    info: WeightsInfo  # what every saved weights file records (config, classes, category ids)
    start: float  # time.perf_counter() at the start
    budget: TimeBudget | None = None  # set once the run is restored
    step: int = 0
    best_ap: float = -1.0
    rows: list[dict] = field(default_factory=list)  # metrics.csv

    @property
    def eval_model(self) -> FCOS:
        """What is evaluated and saved: the EMA of the weights when kept."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def last(self) -> Path:
        return self.run_dir / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.run_dir / "best.safetensors"


def finetune_model(weights: Path, cfg: FCOSConfig, class_names: list[str]) -> tuple[FCOS, list[str]]:
    """A model for `cfg` started from another detector's weights: every tensor whose name and shape fit.

    A different class set re-initialises the class logits (fine-tuning); a different backbone is an error.
    Returns the model and a report of what was and was not loaded.
    """
    recorded = checkpoint.read_info(weights)
    source_cfg, source_names = recorded.config, recorded.class_names
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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
          device: torch.device, model: FCOS | None = None, resume: Path | None = None,
          callbacks: TrainCallbacks | None = None, ranks: Ranks = Ranks()) -> TrainResult:
    """Train `cfg.train.epochs` epochs, evaluating on `val_index` after each; write `run_dir` files.

    `model` starts from given weights (fine-tuning); `resume` (a `last.safetensors` of this run) restores
    the model, optimizer, scheduler, scaler, RNG states, epoch, step and the position inside an epoch.
    SIGINT (Ctrl-C) or SIGTERM, or `cfg.train.time_limit` seconds about to run out, finish the current step,
    save `last.safetensors` and raise `TrainingInterrupted`;
    `cfg.train.max_nonfinite_steps` non-finite steps in a row raise `TrainingDiverged`.
    Under torchrun (`ranks` from `init_distributed`) each rank trains on its share of every epoch and
    the ranks predict their shares of the validation images; rank 0 alone scores them, writes `run_dir`
    and reports to `callbacks`.
    """
    callbacks = callbacks if callbacks is not None and ranks.is_main else TrainCallbacks()
    run = prepare(cfg, train_index, run_dir, device, model, resume, ranks)
    first_epoch, position = restore(run, resume) if resume is not None else (1, {})
    val_batches = math.ceil(len(val_index.records) / cfg.train.batch_size) if val_index is not None else 0
    run.budget = TimeBudget(cfg.train.time_limit, run.start, val_batches)
    final = None
    with stop_on_signals() as signalled:
        for epoch in range(first_epoch, cfg.train.epochs + 1):
            tally = EpochTally.resumed(position if epoch == first_epoch else {}, ranks.is_main)
            train_one_epoch(run, epoch, tally, callbacks, signalled)
            evaluated = end_of_epoch(run, epoch, tally, val_index, callbacks)
            final = evaluated if evaluated is not None else final
            if epoch < cfg.train.epochs and (cause := _stop_cause(run, signalled, epoch_ends=len(run.data) == 1)):
                raise TrainingInterrupted(run.last, epoch, run.step, cause)
    return TrainResult(run_dir, run.last, run.best, final, run.best_ap, time.perf_counter() - run.start,
                       sum(int(r.get("skipped_steps") or 0) for r in run.rows))


def prepare(cfg: FCOSConfig, train_index: DatasetIndex, run_dir: Path, device: torch.device, model: FCOS | None,
            resume: Path | None, ranks: Ranks) -> Run:
    """Seed, resolve `cfg` for the data, build the model (unless given), its loader, optimizer, schedule, AMP
    scaler and EMA; rank 0 writes `run_dir/config.json`."""
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
    if tc.grad_checkpoint:  # the CLI says whether the backbone supports it (set_grad_checkpointing's answer)
        model.set_grad_checkpointing(True)
    net = torch.nn.parallel.DistributedDataParallel(model) if ranks.enabled else model
    if tc.compile:
        net.compile()  # the DDP wrapper, so that dynamo splits the graph at gradient buckets and all-reduce overlaps
    if ranks.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(run_dir / "config.json") as tmp:
            tmp.write_text(json.dumps(to_dict(cfg), indent=2))
    data = loader(train_index, cfg, model.backbone.mean, train=True, seed=tc.seed, num_replicas=ranks.world_size,
                  rank=ranks.rank)
    total_steps = tc.epochs * len(data)
    optimizer = build_optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, tc))
    scaler = torch.amp.GradScaler(device.type, enabled=tc.amp and device.type == "cuda")
    ema = None
    if tc.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=0.9998, use_warmup=True)
    # The dataset's own category ids (COCO), so that predictions map back to them.
    info = WeightsInfo(cfg, class_names, train_index.category_ids)
    return Run(cfg, model, net, ema, optimizer, scheduler, scaler, data, device, ranks, run_dir, class_names, info,
               time.perf_counter())


def restore(run: Run, resume: Path) -> tuple[int, dict]:
    """Load what `resume` (a `last.safetensors` and its training state) saved into `run`: weights, optimizer,
    scheduler, scaler, RNG states, step, best AP and the metrics rows up to its epoch.

    Returns the first epoch to run and the position inside it (empty: from its start)."""
    epoch, run.step, run.best_ap, position = load_state(state_path(resume), run.model, run.optimizer, run.scheduler,
                                                        run.scaler, checkpoint.read_info(resume).checkpoint_id)
    if run.ema is not None:
        run.ema.module.load_state_dict(checkpoint.load(resume)[0].state_dict())
    run.rows = read_history(run.run_dir / "metrics.csv", epoch)
    return epoch + 1, position


def train_one_epoch(run: Run, epoch: int, tally: EpochTally, callbacks: TrainCallbacks,
                    signalled: Callable[[], int]) -> None:
    """This rank's share of `epoch`, from `tally.batches_done` on (a resumed epoch), added up in `tally`.

    A stop signal (`signalled`) or the time budget ends it at a step boundary: rank 0 saves `last` with the
    position inside the epoch, and every rank raises `TrainingInterrupted`.
    """
    steps = len(run.data)
    run.model.train()
    run.data.sampler.set_epoch(epoch, skip=tally.batches_done * run.cfg.train.batch_size)
    run.data.dataset.epoch = epoch  # augmentation seeds are a function of (seed, epoch, image)
    callbacks.epoch_started(epoch, steps, tally.batches_done, tally.mean_loss)
    epoch_start, seen_before = time.perf_counter(), tally.seen
    for batch in start_workers(run.data):  # no name kept for the iterator: an exception frees its workers
        losses = _step(run.net, run.model, batch, run.cfg, run.device, run.optimizer, run.scaler, run.ranks)
        _count(run, tally, losses, len(batch.images))
        run.scheduler.step()
        run.step, tally.batches_done = run.step + 1, tally.batches_done + 1
        callbacks.step_done(tally.mean_loss, (tally.seen - seen_before) / max(time.perf_counter() - epoch_start, 1e-9))
        run.budget.lap("step")
        if tally.batches_done < steps and (cause := _stop_cause(run, signalled, tally.batches_done + 1 == steps)):
            if run.ranks.is_main:
                save_last(run, epoch - 1, asdict(tally))
            raise TrainingInterrupted(run.last, epoch, run.step, cause)


def _count(run: Run, tally: EpochTally, losses: FCOSLosses | None, num_images: int) -> None:
    """Add a step's losses to `tally`, or count it as skipped (None); too many skipped in a row diverge."""
    if losses is None:
        tally.skipped, tally.nonfinite_run = tally.skipped + 1, tally.nonfinite_run + 1
        if tally.nonfinite_run >= run.cfg.train.max_nonfinite_steps:
            kept = f"; the last good checkpoint is {run.last}" if run.last.is_file() else ""
            raise TrainingDiverged(f"training diverged: {tally.nonfinite_run} non-finite losses or gradients "
                                   f"in a row (step {run.step + 1}); lower --lr or turn on --grad-clip{kept}")
        return
    tally.nonfinite_run = 0
    if run.ema is not None:
        run.ema.update(run.model, step=run.step)
    values = torch.stack([losses.total, losses.cls, losses.box, losses.centerness]).detach()
    for name, value in zip(LOSS_NAMES, values.tolist(), strict=True):  # one sync, not four
        tally.sums[name] += value * num_images
    tally.seen += num_images


def end_of_epoch(run: Run, epoch: int, tally: EpochTally, val_index: DatasetIndex | None,
                 callbacks: TrainCallbacks) -> EvalResult | None:
    """Add the epoch up over ranks and validate when due; rank 0 then writes its metrics.csv row, curves.png,
    best (when AP improved, or always without validation data) and last. Returns the evaluation (rank 0's)."""
    tc = run.cfg.train
    *totals, seen = run.ranks.total([*tally.sums.values(), tally.seen], run.device)  # every rank's images
    evaluated = None
    if val_index is not None and val_index.records and (epoch % tc.eval_interval == 0 or epoch == tc.epochs):
        run.ranks.sync_buffers(run.eval_model)  # every rank predicts its share with rank 0's model
        evaluated = evaluate(run.eval_model, run.cfg, val_index, run.device, batch_size=tc.batch_size, amp=tc.amp,
                             ranks=run.ranks)
    if run.ranks.is_main:
        row = {"epoch": epoch, "step": run.step, "lr": run.optimizer.param_groups[0]["lr"],
               **{k: v / max(seen, 1) for k, v in zip(tally.sums, totals, strict=True)}, "skipped_steps": tally.skipped,
               **(evaluated.metrics if evaluated is not None else {}),
               "seconds": round(time.perf_counter() - run.start, 1)}
        run.rows.append(row)
        # Metrics before weights: a resume truncates them to the checkpoint's epoch, never leaves a gap.
        write_history(run.rows, run.run_dir / "metrics.csv")
        plot_history(run.rows, run.run_dir / "curves.png")
        if val_index is None or row.get("AP", -1.0) > run.best_ap:
            run.best_ap = row.get("AP", run.best_ap)
            checkpoint.save(run.best, run.eval_model, replace(run.info, epoch=epoch))
        save_last(run, epoch, {})
        callbacks.epoch_ended(row)
    run.budget.lap("end")
    return evaluated


def save_last(run: Run, epoch_done: int, position: dict) -> None:
    """State first, then weights: a kill between the two leaves the previous pair (see `save_state`)."""
    began = time.perf_counter()
    checkpoint_id = f"{epoch_done}-{run.step}-{uuid.uuid4().hex[:8]}"  # pairs the weights with their state
    save_state(state_path(run.last), run.model, run.optimizer, run.scheduler, run.scaler, epoch_done, run.step,
               run.best_ap, checkpoint_id, position)
    checkpoint.save(run.last, run.eval_model,
                    replace(run.info, checkpoint_id=checkpoint_id, epoch=epoch_done, step=run.step))
    run.budget.saved(time.perf_counter() - began)


def _stop_cause(run: Run, signalled: Callable[[], int], epoch_ends: bool) -> int:
    """Why to stop at this boundary (0: go on), the same on every rank: a signal, else the time budget (no room
    for the next step, the epoch's last if `epoch_ends`, and what follows it)."""
    return run.ranks.max(signalled() or (TIME_LIMIT if run.budget.exhausted(epoch_ends) else 0), run.device)
