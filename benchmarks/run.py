"""Speed of fcos_cli against torchvision's fcos_resnet50_fpn: same architecture, weights, inputs, dtype, threads.

Ours is the `torchvision` preset on timm's resnet50 loaded with torchvision's (random) weights through
`compat.from_torchvision_state_dict`, so both compute the same detections. Both run end to end from a
0-1 image tensor to detections (torchvision with min_size = max_size = S, so that it really runs at S).
Prints a table of ratios (ours / torchvision) and writes `<out>/<device>.json` (cpu.json, cuda.json). On the CPU it
also runs `e2e.py` (JPEG files in, annotated files or trained weights out: predict_e2e, train_e2e, loader, JPEG readers;
a few minutes more) unless --quick or --no-e2e.

    python benchmarks/run.py [--quick] [--no-e2e] [--out benchmarks/results] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assign import make_assigners  # noqa: E402 - benchmarks/ is not a package

from fcos_cli.compat import from_torchvision_state_dict  # noqa: E402
from fcos_cli.config import FCOSConfig, preset  # noqa: E402
from fcos_cli.engine.predict import detect, inference_amp  # noqa: E402
from fcos_cli.model import FCOS, build_model  # noqa: E402
from fcos_cli.model.optimize import optimize_for_inference, speed_up_training  # noqa: E402
from fcos_cli.pipeline import detections_for, loss_for  # noqa: E402

NUM_CLASSES = 91  # torchvision's COCO slots
TRAINABLE_BACKBONE_LAYERS = 3  # torchvision's default: stem and layer1 frozen, FrozenBatchNorm2d everywhere
GOALS = {"infer_800": 0.85, "train_step": 0.85, "assign": 0.2, "train_peak_mem_mb": 1.0, "infer_800_default": 0.5,
         "train_peak_mem_mb_ckpt": 0.6}
POSTPROCESS_SHARE_GOAL = 0.05
# Self time of convolution kernels: oneDNN forward, the non-oneDNN forwards, and backward (all gradients).
CPU_CONV_OPS = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::_nnpack_spatial_convolution",
                "aten::convolution_backward", "aten::_slow_conv2d_backward")
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def torchvision_fcos(arch: str = "resnet50") -> torch.nn.Module:
    """torchvision's FCOS as `fcos_resnet50_fpn(weights_backbone=...)` builds it, with random weights.

    With pretrained weights (how it is used) torchvision freezes the stem and layer1 and uses
    FrozenBatchNorm2d (separate multiply and add ops); `weights=None` would give BatchNorm2d and train all
    layers. Its frozen statistics come from two random batches, so that activations have a sane scale.
    """
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    calibrate = getattr(torchvision.models, arch)(weights=None)
    for module in calibrate.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    with torch.no_grad():
        for _ in range(2):
            calibrate(torch.randn(2, 3, 224, 224))
    body = getattr(torchvision.models, arch)(weights=None, norm_layer=FrozenBatchNorm2d)
    body.load_state_dict(calibrate.state_dict())
    backbone = _resnet_fpn_extractor(body, TRAINABLE_BACKBONE_LAYERS, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    return torchvision.models.detection.FCOS(backbone, NUM_CLASSES)


def build_pair(arch: str = "resnet50", train: bool = False, which: str = "both"
               ) -> tuple[torch.nn.Module | None, FCOS | None, FCOSConfig]:
    """torchvision's FCOS and ours (`torchvision` preset) with the same weights; eval mode unless `train`.

    Training: ours freezes the stem and layer1 and uses FrozenBatchNorm2d, as torchvision
    (`freeze_stages=1`, `freeze_bn=True`). Inference: ours keeps BatchNorm2d, the model `fcos train` makes.
    `which` ("ours", "torchvision") drops the other model (for memory measurements).
    """
    torch.manual_seed(0)
    tv = torchvision_fcos(arch)
    cfg = preset("torchvision")
    cfg.model.num_classes = NUM_CLASSES
    cfg.model.backbone.name = arch
    if train:
        cfg.model.backbone.freeze_bn = True
        cfg.model.backbone.freeze_stages = 4 - TRAINABLE_BACKBONE_LAYERS  # stem + layer1
    ours = None
    if which != "torchvision":
        ours = build_model(cfg.model)
        state, unused = from_torchvision_state_dict(tv.state_dict())
        assert not unused, unused
        ours.load_state_dict(state, strict=True)
        ours.train(train)
    if which == "ours":
        tv = None
    else:
        tv.train(train)
    return tv, ours, cfg


def set_size(tv: torch.nn.Module, size: int) -> None:
    tv.transform.min_size, tv.transform.max_size = (size,), size


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 1
              ) -> dict[str, float]:
    """Median wall time of each function, in ms. The functions take turns in every repeat, so that a
    change of load on a shared machine hits all of them alike and their ratios stay meaningful."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def amp_context(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def row(ours_ms: float, tv_ms: float) -> dict:
    return {"ours_ms": round(ours_ms, 2), "torchvision_ms": round(tv_ms, 2), "ratio": round(ours_ms / tv_ms, 3)}


def bench_inference(arch: str, sizes: dict[str, int], repeats: int, device: torch.device) -> dict:
    """infer_* rows (batch 1, default score thresholds) and the postprocess rows (score threshold 0)."""
    tv, ours, cfg = build_pair(arch)
    tv, ours = tv.to(device), ours.to(device)
    fast = optimize_for_inference(ours)
    amp_default = inference_amp(device)  # what `fcos predict` / `eval` use on this device
    results = {}

    def tv_detect(x: torch.Tensor, amp: bool):
        with torch.no_grad(), amp_context(device, amp):  # torchvision's documented inference
            return tv(list(x))

    def our_detect(model: FCOS, x: torch.Tensor, amp: bool):
        return detect(model, cfg, x, [tuple(x.shape[-2:])] * len(x), amp)

    amp_runs = [("", False), ("_bf16" if device.type == "cpu" else "_amp", True)]
    for key, size in sizes.items():
        set_size(tv, size)
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size)).to(device)
        for suffix, amp in amp_runs if key == "infer_800" else amp_runs[:1]:
            fns = {"tv": lambda x=x, amp=amp: tv_detect(x, amp), "ours": lambda x=x, amp=amp: our_detect(fast, x, amp)}
            if key == "infer_800" and not amp:
                fns["default"] = lambda x=x: our_detect(fast, x, amp_default)
                fns["unoptimized"] = lambda x=x: our_detect(ours, x, False)
            ms = median_ms(fns, repeats, device)
            results[key + suffix] = row(ms["ours"], ms["tv"])
            if "default" in ms:
                results["infer_800_default"] = row(ms["default"], ms["tv"])
                results["infer_800_unoptimized"] = row(ms["unoptimized"], ms["tv"])

    # Postprocess alone on the same head outputs' shapes, score threshold 0 (every level gives 1000 candidates).
    size = sizes["infer_800"]
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    cfg.post.score_thresh = tv.score_thresh = 0.0
    with torch.inference_mode():
        outputs = fast(x)
        batched = tv.transform.batch_images([tv.transform.normalize(img) for img in x], size_divisible=32)
        features = list(tv.backbone(batched).values())
        head = tv.head(features)
        from torchvision.models.detection.image_list import ImageList

        anchors = tv.anchor_generator(ImageList(batched, [(size, size)]), features)
    num_per_level = [f.shape[2] * f.shape[3] for f in features]
    split_head = {k: list(v.split(num_per_level, dim=1)) for k, v in head.items()}
    split_anchors = [list(a.split(num_per_level)) for a in anchors]

    def our_post():
        with torch.inference_mode():
            return detections_for(outputs, fast.strides, [(size, size)], cfg)

    def tv_post():
        with torch.no_grad():
            return tv.postprocess_detections(split_head, split_anchors, [(size, size)])

    ours_det, tv_det = our_post()[0], tv_post()[0]  # same weights and input: the same detections
    num = min(100, len(ours_det["scores"]), len(tv_det["scores"]))
    results["max_score_difference"] = float((ours_det["scores"][:num] - tv_det["scores"][:num]).abs().max())
    ms = median_ms({"ours": our_post, "tv": tv_post}, repeats, device)
    results["postprocess"] = row(ms["ours"], ms["tv"])
    results["postprocess_share"] = round(results["postprocess"]["ours_ms"] / results["infer_800"]["ours_ms"], 4)
    return results


def train_step_fns(arch: str, size: int, batch: int, device: torch.device, boxes: int = 20, which: str = "both",
                   amp: bool = False, grad_checkpoint: bool = False):
    """One-step closures (forward, loss, backward, SGD step) for ours and torchvision, same data and weights
    (None for the model that `which` leaves out); `amp`: forward and loss under the same autocast;
    `grad_checkpoint`: ours recomputes backbone stages and head towers in backward (`fcos train --grad-checkpoint`)."""
    from assign import random_boxes

    tv, ours, cfg = build_pair(arch, train=True, which=which)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=g).to(device)
    gt_boxes = [random_boxes(boxes, size, g).to(device) for _ in range(batch)]
    gt_labels = [torch.randint(1, NUM_CLASSES, (boxes,), generator=g).to(device) for _ in range(batch)]
    targets = [{"boxes": b, "labels": lb} for b, lb in zip(gt_boxes, gt_labels, strict=True)]

    def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=1e-5, momentum=0.9, weight_decay=1e-4)  # small lr: stays finite

    if tv is not None:
        tv = tv.to(device)
        set_size(tv, size)
        tv_opt = optimizer(tv)
    if ours is not None:
        ours = speed_up_training(ours.to(device))  # channels_last
        ours.set_grad_checkpointing(grad_checkpoint)
        our_opt = optimizer(ours)

    def tv_step():
        with amp_context(device, amp):
            losses = tv(list(images), targets)
        sum(losses.values()).backward()
        tv_opt.step()
        tv_opt.zero_grad(set_to_none=True)

    def our_step():
        with amp_context(device, amp):
            losses = loss_for(ours(images), ours.strides, gt_boxes, gt_labels, cfg)
        losses.total.backward()
        our_opt.step()
        our_opt.zero_grad(set_to_none=True)

    return (our_step if ours is not None else None), (tv_step if tv is not None else None)


def conv_ms_per_step(step: Callable[[], None], steps: int = 2) -> tuple[float, float]:
    """CPU (convolution ms, everything else ms) per training step, from torch.profiler's self times: how much
    of a step is convolution forward and backward, the work that the architecture fixes."""
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.key in CPU_CONV_OPS)
    return conv / steps / 1e3, (total - conv) / steps / 1e3


def peak_memory_mb(arch: str, which: str, size: int, batch: int, device: torch.device, steps: int
                   ) -> tuple[float, float]:
    """Peak memory of `steps` training steps of one model (`ours`, `ours-ckpt` with gradient checkpointing, or
    `torchvision`) and the memory before them (model built): CUDA allocated, or the CPU process's RSS (each model in
    its own subprocess, so that neither sees the other's allocations)."""
    if device.type == "cuda":
        our_step, tv_step = train_step_fns(arch, size, batch, device, which=which.removesuffix("-ckpt"),
                                           grad_checkpoint=which == "ours-ckpt")
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        for _ in range(steps):
            (our_step if which != "torchvision" else tv_step)()
        return torch.cuda.max_memory_allocated(device) / 2**20, before
    cmd = [sys.executable, __file__, "--memory-child", which, "--arch", arch, "--memory-size", str(size), "--memory-batch",
           str(batch), "--memory-steps", str(steps), "--threads", str(torch.get_num_threads())]
    # glibc's mmap threshold adapts to the allocation history, which moved peak RSS by +-50 MB between identical
    # runs; a fixed one returns every large freed block at once, so RSS follows live memory (both children alike).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    peak, before = out.strip().splitlines()[-1].split()
    return float(peak), float(before)


def memory_child(arch: str, which: str, size: int, batch: int, steps: int) -> None:
    """Prints the peak RSS of `steps` training steps and the RSS before them: the high-water mark is reset after the
    models are built (building ours also builds torchvision's model for its weights, which must not count)."""
    our_step, tv_step = train_step_fns(arch, size, batch, torch.device("cpu"), which=which.removesuffix("-ckpt"),
                                       grad_checkpoint=which == "ours-ckpt")
    gc.collect()
    if not reset_peak_rss():
        print("warning: peak RSS could not be reset; it includes building the models", file=sys.stderr)
    before = rss_mb()
    for _ in range(steps):
        (our_step if which != "torchvision" else tv_step)()
    print(peak_rss_mb(), before)


def reset_peak_rss() -> bool:
    """Linux: hand freed heap back to the system (glibc) and restart VmHWM from the current RSS.
    False where the high-water mark cannot be reset (then the peak includes building the models)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    """This process's resident memory now (Linux), else its peak."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM on Linux (ru_maxrss there also counts the parent's
    memory at fork, which a subprocess inherits through exec), else `ru_maxrss`."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    scale = 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def run(device: torch.device, quick: bool, repeats: int) -> dict:
    arch = "resnet18" if quick else "resnet50"  # quick: the same comparison on a smaller ResNet, for tests
    infer_sizes = {"infer_512": 64, "infer_800": 96} if quick else {"infer_512": 512, "infer_800": 800}
    train_size, train_batch = (64, 2) if quick else (512, 2)
    large_size = 128 if quick else 1024  # memory rows with checkpointing: batch 1
    assign_batch, assign_boxes, assign_size = (2, 10, 256) if quick else (8, 50, 800)
    results = bench_inference(arch, infer_sizes, repeats, device)
    log("inference and postprocess rows done")

    our_step, tv_step = train_step_fns(arch, train_size, train_batch, device)
    ms = median_ms({"ours": our_step, "tv": tv_step}, repeats, device)
    results["train_step"] = row(ms["ours"], ms["tv"])
    if device.type == "cpu":  # why train_step cannot go much lower: both run the same convolutions
        (ours_conv, ours_other), (tv_conv, tv_other) = conv_ms_per_step(our_step), conv_ms_per_step(tv_step)
        results["train_step_profile"] = {
            "ours_conv_ms": round(ours_conv, 1), "ours_other_ms": round(ours_other, 1),
            "torchvision_conv_ms": round(tv_conv, 1), "torchvision_other_ms": round(tv_other, 1),
            # our step without anything but its convolutions (profiler overhead cancels in the share)
            "conv_floor_ratio": round(ours_conv / (ours_conv + ours_other) * ms["ours"] / ms["tv"], 3)}
    amp_key = "train_step_bf16" if device.type == "cpu" else "train_step_amp"
    ms = median_ms(dict(zip(("ours", "tv"), train_step_fns(arch, train_size, train_batch, device, amp=True), strict=True)),
                   repeats, device)
    results[amp_key] = row(ms["ours"], ms["tv"])  # forward and losses under autocast (ours: losses in float32)
    ms = median_ms(dict(zip(("ours", "tv"), train_step_fns(arch, train_size, train_batch, device, grad_checkpoint=True), strict=True)),
                   repeats, device)
    results["train_step_ckpt"] = row(ms["ours"], ms["tv"])  # what --grad-checkpoint costs in time
    log("train steps done")

    our_assign, tv_assign = make_assigners(assign_batch, assign_boxes, assign_size)
    assert torch.equal(our_assign(), tv_assign()), "assignment differs from torchvision's"
    assign_repeats = repeats if quick else max(repeats, 20)
    ms = median_ms({"ours": our_assign, "tv": tv_assign}, assign_repeats, torch.device("cpu"))
    results["assign"] = row(ms["ours"], ms["tv"])

    log("assignment done")
    steps = 1 if quick else 2
    ours_mb, _ = peak_memory_mb(arch, "ours", train_size, train_batch, device, steps)
    tv_mb, _ = peak_memory_mb(arch, "torchvision", train_size, train_batch, device, steps)
    results["train_peak_mem_mb"] = {"ours": round(ours_mb, 1), "torchvision": round(tv_mb, 1),
                                    "ratio": round(ours_mb / tv_mb, 3)}
    # One step on a large image, where activations dominate: ours plain and with --grad-checkpoint vs torchvision.
    # `step_ratio` compares what the step adds to the built model (activations, gradients, optimizer state).
    tv_mb, tv_before = peak_memory_mb(arch, "torchvision", large_size, 1, device, 1)
    for key, which in (("train_peak_mem_mb_large", "ours"), ("train_peak_mem_mb_ckpt", "ours-ckpt")):
        ours_mb, ours_before = peak_memory_mb(arch, which, large_size, 1, device, 1)
        results[key] = {"ours": round(ours_mb, 1), "torchvision": round(tv_mb, 1), "ratio": round(ours_mb / tv_mb, 3),
                        "step_ratio": round((ours_mb - ours_before) / max(tv_mb - tv_before, 1.0), 3), "size": large_size}
    log("memory done")
    results["setup"] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "backbone": arch,
        "threads": torch.get_num_threads(), "repeats": repeats, "quick": quick,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "infer_sizes": infer_sizes,
        "train": f"batch {train_batch} at {train_size}, 20 boxes per image, SGD; both with the stem and layer1 "
                 f"frozen and FrozenBatchNorm2d (torchvision trainable_backbone_layers=3; ours freeze_stages=1, "
                 f"freeze_bn=True); ours channels_last",
        "assign": f"batch {assign_batch} x {assign_boxes} boxes at {assign_size}",
        "default_precision": "bf16 autocast" if inference_amp(device) and device.type == "cpu" else
                             ("fp16 autocast" if inference_amp(device) else "float32"),
    }
    return results


def print_table(results: dict, device: str) -> None:
    lines = [("infer_512", "inference 512, batch 1, fp32"), ("infer_800", "inference 800, batch 1, fp32"),
             ("infer_800_bf16", "inference 800, both bf16 autocast"), ("infer_800_amp", "inference 800, both AMP"),
             ("infer_800_default", "inference 800: ours default vs torchvision fp32"),
             ("infer_800_unoptimized", "inference 800, fp32, ours without optimize_for_inference"),
             ("train_step", "train step, batch 2 at 512, fp32"),
             ("train_step_bf16", "train step, both bf16 autocast"), ("train_step_amp", "train step, both AMP"),
             ("train_step_ckpt", "train step, fp32, ours --grad-checkpoint"),
             ("assign", "target assignment, 8 x 50 boxes at 800"),
             ("postprocess", "postprocess alone, score threshold 0")]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table("row", "what", "ours", "torchvision", "ratio", "goal", title=f"fcos_cli / torchvision ({device})")
        add = table.add_row
    except ImportError:
        table, add = None, lambda *cells: print(" | ".join(cells))
        add("row", "what", "ours", "torchvision", "ratio", "goal")

    def goal(key: str, ratio: float) -> str:
        return f"<= {GOALS[key]} {'met' if ratio <= GOALS[key] else 'MISSED'}" if key in GOALS else ""

    for key, what in lines:
        if key in results:
            r = results[key]
            add(key, what, f"{r['ours_ms']:.1f} ms", f"{r['torchvision_ms']:.1f} ms", f"{r['ratio']:.3f}",
                goal(key, r["ratio"]))
    size = f"{results['train_peak_mem_mb_large']['size']}², batch 1"
    for key, what in (("train_peak_mem_mb", "peak memory of a train step"),
                      ("train_peak_mem_mb_large", f"peak memory, one step at {size}"),
                      ("train_peak_mem_mb_ckpt", f"peak memory at {size}, ours --grad-checkpoint")):
        m = results[key]
        step = f" (step alone {m['step_ratio']:.3f})" if "step_ratio" in m else ""
        add(key, what, f"{m['ours']:.0f} MB", f"{m['torchvision']:.0f} MB", f"{m['ratio']:.3f}{step}",
            goal(key, m["ratio"]))
    share = results["postprocess_share"]
    add("postprocess_share", "ours: postprocess / inference 800", f"{share:.1%}", "", "",
        f"< {POSTPROCESS_SHARE_GOAL:.0%} {'met' if share < POSTPROCESS_SHARE_GOAL else 'MISSED'}")
    if "train_step_profile" in results:
        p = results["train_step_profile"]
        add("train_step_profile", "train step: convolution / other (profiler)",
            f"{p['ours_conv_ms']:.0f} / {p['ours_other_ms']:.0f} ms",
            f"{p['torchvision_conv_ms']:.0f} / {p['torchvision_other_ms']:.0f} ms",
            f"{p['conv_floor_ratio']:.3f}", "ours conv alone / torchvision step")
    if table is not None:
        Console(width=max(Console().width, 132)).print(table)
    s = results["setup"]
    print(f"threads {s['threads']}, median of {s['repeats']} after warm-up, load average (1 min) at the end "
          f"{s['load_average_1m_at_end']}; train: {s['train']}; ours default precision: {s['default_precision']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and 1 repeat (for tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row after one warm-up")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's (all available cores)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--e2e", action=argparse.BooleanOptionalAction, default=None,
                        help="also run e2e.py on the CPU (default: yes, except with --quick)")
    parser.add_argument("--memory-child", choices=["ours", "ours-ckpt", "torchvision"], help=argparse.SUPPRESS)
    parser.add_argument("--arch", default="resnet50", help=argparse.SUPPRESS)
    parser.add_argument("--memory-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads or args.quick:  # quick: one thread, robust on a machine busy with other tests
        torch.set_num_threads(args.threads or 1)
    if args.memory_child:
        memory_child(args.arch, args.memory_child, args.memory_size, args.memory_batch, args.memory_steps)
        return
    repeats = 1 if args.quick else args.repeats
    devices = [torch.device("cpu")] if args.device == "cpu" else []
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "auto":
        devices.insert(0, torch.device("cpu"))
    args.out.mkdir(parents=True, exist_ok=True)
    for device in devices:
        results = run(device, args.quick, repeats)
        print_table(results, device.type)
        if device.type == "cpu" and (args.e2e if args.e2e is not None else not args.quick):
            import e2e

            results.update(e2e.run(args.quick, **e2e.defaults(args.quick)))
            e2e.print_rows(results)
        path = args.out / f"{device.type}.json"
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
