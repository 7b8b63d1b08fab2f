"""GPU rows: inference latency at batch 1 and training images/s at batch 8, data loading included; GPU JPEG decoding.

For a machine with a CUDA GPU (never needed by the tests); writes `<out>/cuda.json` and prints a progress line per
step. (Not named cuda.py: a `cuda` module beside the scripts would shadow the `cuda` package that torch imports.) About 2 minutes on an H200 (most of it generating the JPEGs and starting data workers).

- `infer_800_amp`, `infer_800_fp32`: batch 1 at 800 x 800 from a tensor already on the GPU to detections: ours
  (`optimize_for_inference`: folded BatchNorm, channels_last) against torchvision's `fcos_resnet50_fpn` with the same
  weights (run.py's pair), both under fp16 autocast, then both float32. Median of `--repeats` after warm-up.
- `predict_800_file`: the same per JPEG file (1200 x 800 generated scene, resized to short side 800): read, resize,
  detect, boxes back on the CPU; ours `fcos_cli.predict(..., amp=True)`, torchvision PIL -> to_tensor -> cuda -> model.
- `train_b8_800`: training images/s at batch 8, longest side 800, both with their own data loading from JPEG files
  (`--workers` processes, pinned memory) and fp16 AMP with GradScaler: ours the train engine's loader (augmentation
  included) and step (`engine.train._step`: clipping, finite checks), channels_last; torchvision its reference-style
  loop (PIL -> tensor, no augmentation). Timed after `--warmup` steps, over `--steps` steps.
- `jpeg_decode`: images/s decoding the 1200 x 800 JPEGs: `torchvision.io.decode_jpeg(device="cuda")` on batches of
  `--decode-batch` file contents against one CPU thread of PIL, torchvision and OpenCV (a DataLoader multiplies the
  CPU figure by its workers); `gpu_wins` says whether the GPU beats the fastest CPU reader times the workers.

    python benchmarks/gpu.py [--out benchmarks/results] [--repeats 20] [--steps 12] [--workers 8]
    python benchmarks/gpu.py --device cpu --quick --out /tmp/cuda_smoke   # smoke test on a CPU (tiny sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # noqa: E402 - benchmarks/ is not a package
import run as bench  # noqa: E402

from fcos_cli.config import FCOSConfig  # noqa: E402
from fcos_cli.engine.predict import detect  # noqa: E402
from fcos_cli.model.optimize import optimize_for_inference  # noqa: E402

START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", flush=True)


def bench_inference(arch: str, size: int, photos: list[Path], repeats: int, device: torch.device) -> dict:
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    import fcos_cli

    tv, ours, cfg = bench.build_pair(arch)
    tv, ours = tv.to(device), ours.to(device)
    fast = optimize_for_inference(ours)
    bench.set_size(tv, size)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    rows = {}
    for key, amp in (("infer_800_amp", True), ("infer_800_fp32", False)):
        def ours_fn(amp: bool = amp):
            return detect(fast, cfg, x, [(size, size)], amp)

        def tv_fn(amp: bool = amp):
            with torch.no_grad(), bench.amp_context(device, amp):
                return tv(list(x))

        ms = bench.median_ms({"ours": ours_fn, "tv": tv_fn}, repeats, device, warmup=3)
        rows[key] = bench.row(ms["ours"], ms["tv"])
        log(f"{key}: ours {ms['ours']:.1f} ms, torchvision {ms['tv']:.1f} ms")

    # From the file: short side `size`, as both resize by default (torchvision min_size; ours img_size + max_size).
    cfg.data.img_size, cfg.data.max_size = size, round(size * 1333 / 800)
    tv.transform.min_size, tv.transform.max_size = (size,), cfg.data.max_size
    files = iter(photos * (repeats + 3))

    def ours_file():
        with Image.open(next(files)) as im:
            return fcos_cli.predict(fast, cfg, [np.array(im.convert("RGB"))], amp=True)

    def tv_file():
        image = to_tensor(Image.open(next(files)).convert("RGB")).to(device)
        with torch.no_grad(), bench.amp_context(device, True):
            det = tv([image])[0]
        return {k: v.cpu() for k, v in det.items()}

    ms = bench.median_ms({"ours": ours_file, "tv": tv_file}, repeats, device, warmup=3)
    rows["predict_800_file"] = bench.row(ms["ours"], ms["tv"])
    log(f"predict_800_file: ours {ms['ours']:.1f} ms, torchvision {ms['tv']:.1f} ms")
    return rows


def _timed_steps(batches, step, warmup: int, steps: int, device: torch.device) -> float:
    """Images/s of `steps` steps after `warmup` ones, waiting for data included."""
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    bench.sync(device)
    began, seen = time.perf_counter(), 0
    for _ in range(steps):
        seen += step(next(it))
    bench.sync(device)
    return seen / (time.perf_counter() - began)


def _forever(make_loader):
    """Batches from fresh epochs of a DataLoader, without end (workers restart each epoch, as in training)."""
    epoch = 0
    while True:
        data = make_loader(epoch)
        yield from data
        epoch += 1


def bench_train(arch: str, annotations: Path, size: int, batch: int, workers: int, warmup: int, steps: int,
                device: torch.device) -> dict:
    ours_ips = _ours_train(arch, annotations, size, batch, workers, warmup, steps, device)
    log(f"train ours: {ours_ips:.1f} images/s")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    tv_ips = _torchvision_train(arch, annotations, size, batch, workers, warmup, steps, device)
    log(f"train torchvision: {tv_ips:.1f} images/s")
    return {"train_b8_800": {"ours_images_per_s": round(ours_ips, 2), "torchvision_images_per_s": round(tv_ips, 2),
                             "ratio": round(tv_ips / ours_ips, 3), "batch": batch, "size": size, "workers": workers}}


def _ours_train(arch: str, annotations: Path, size: int, batch: int, workers: int, warmup: int, steps: int,
                device: torch.device) -> float:
    """The train engine's loader and step (`engine.train._step`), AMP, channels_last: images/s."""
    from fcos_cli.data import open_split
    from fcos_cli.engine.common import loader
    from fcos_cli.engine.distributed import Ranks
    from fcos_cli.engine.train import _step, build_optimizer
    from fcos_cli.model import build_model
    from fcos_cli.model.optimize import speed_up_training

    index = open_split(annotations)
    cfg = FCOSConfig()
    cfg.model.backbone.name, cfg.model.backbone.pretrained = arch, False
    cfg.model.num_classes = len(index.class_names)
    cfg.data.img_size, cfg.train.batch_size, cfg.train.workers, cfg.train.amp = size, batch, workers, True
    torch.manual_seed(0)
    model = speed_up_training(build_model(cfg.model).to(device)).train()
    optimizer = build_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")

    def make_ours(epoch: int):
        data = loader(index, cfg, model.backbone.mean, train=True, seed=0)
        data.sampler.set_epoch(epoch)
        data.dataset.epoch = epoch
        return data

    def ours_step(b) -> int:
        losses = _step(model, model, b, cfg, device, optimizer, scaler, Ranks())
        if losses is not None:  # the engine logs the loss terms every step: one sync, as there
            torch.stack([losses.total, losses.cls, losses.box, losses.centerness]).tolist()
        return len(b.images)

    return _timed_steps(_forever(make_ours), ours_step, warmup, steps, device)


def _torchvision_train(arch: str, annotations: Path, size: int, batch: int, workers: int, warmup: int, steps: int,
                       device: torch.device) -> float:
    """torchvision/references/detection's loop with --amp: its own DataLoader, fp16 autocast, GradScaler: images/s."""
    dataset = e2e.CocoFiles(annotations)
    torch.manual_seed(0)
    tv = e2e.tv_fcos(arch, dataset.num_classes, size, size).to(device).train()
    tv_optimizer = torch.optim.SGD([p for p in tv.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                   weight_decay=1e-4)
    tv_scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")

    def make_tv(epoch: int):
        return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                           collate_fn=e2e._as_lists, pin_memory=device.type == "cuda")

    def tv_step(b) -> int:
        images, targets = b
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with bench.amp_context(device, True):
            losses = tv(images, targets)
            loss = sum(losses.values())
        tv_optimizer.zero_grad()
        tv_scaler.scale(loss).backward()
        tv_scaler.step(tv_optimizer)
        tv_scaler.update()
        loss.item()  # MetricLogger
        return len(images)

    return _timed_steps(_forever(make_tv), tv_step, warmup, steps, device)


def bench_decode(photos: list[Path], batch: int, repeats: int, device: torch.device, workers: int) -> dict:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    cpu = {k: v for k, v in e2e.readers().items() if k != "fcos_cli_read_image"}
    rates = {}
    for key, fn in cpu.items():
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            for path in photos:
                fn(path)
            times.append(time.perf_counter() - began)
        rates[f"cpu_{key}"] = round(len(photos) / statistics.median(times), 1)
    row = {**rates, "images": len(photos)}
    if device.type != "cuda":
        row["gpu_decode_jpeg"] = None
        row["gpu_wins"] = None
        log(f"jpeg_decode (CPU only): {rates}")
        return {"jpeg_decode": row}
    contents = [read_file(str(p)) for p in photos]  # file reading is the same for both: decode alone
    chunks = [contents[i:i + batch] for i in range(0, len(contents), batch)]

    def gpu():
        for chunk in chunks:
            decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device)

    times = []
    for i in range(repeats + 1):
        bench.sync(device)
        began = time.perf_counter()
        gpu()
        bench.sync(device)
        if i:  # the first pass initialises nvjpeg
            times.append(time.perf_counter() - began)
    row["gpu_decode_jpeg"] = round(len(photos) / statistics.median(times), 1)
    row["gpu_batch"] = batch
    row["gpu_wins"] = row["gpu_decode_jpeg"] > max(rates.values()) * workers
    log(f"jpeg_decode: {row}")
    return {"jpeg_decode": row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and counts (smoke test)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per latency row after warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before timing")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps")
    parser.add_argument("--batch", type=int, default=8, help="training batch")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader workers, both sides")
    parser.add_argument("--decode-batch", type=int, default=16, help="JPEGs per GPU decode call")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run with --device cpu --quick for a smoke test")
    if args.quick:
        torch.set_num_threads(min(torch.get_num_threads(), 2))
        args.repeats, args.warmup, args.steps, args.batch = 2, 1, 2, 2
        args.workers = min(args.workers, 1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # varying image sizes: no per-shape autotuning in the timings
    arch, infer_size, train_size = ("resnet18", 128, 128) if args.quick else ("resnet50", 800, 800)
    photo_size = (192, 128) if args.quick else (1200, 800)
    num_photos = 4 if args.quick else 32
    num_train = args.batch * (args.warmup + args.steps)  # one epoch covers every step: one worker start-up
    log(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, {arch}; writing JPEGs")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="fcos_cuda_") as tmp:
        from fcos_cli.data.synthetic import write_demo_data

        photos = e2e.write_photos(Path(tmp) / "photos", num_photos, photo_size)
        annotations = write_demo_data(Path(tmp) / "coco", num_train=num_train, num_val=1, max_side=train_size) / "train.json"
        log(f"{num_photos} photos {photo_size[0]}x{photo_size[1]} and {num_train} training images written")
        results.update(bench_inference(arch, infer_size, photos, args.repeats, device))
        results.update(bench_train(arch, annotations, train_size, args.batch, args.workers, args.warmup, args.steps,
                                   device))
        results.update(bench_decode(photos, args.decode_batch, 3, device, args.workers))
    results["setup"] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "quick": args.quick,
        "backbone": arch, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cpus": os.cpu_count(), "workers": args.workers, "repeats": args.repeats,
        "train": f"batch {args.batch}, longest side {train_size}, {args.warmup} warm-up + {args.steps} timed steps, "
                 f"AMP (fp16 + GradScaler on CUDA, bf16 on CPU), random init, all layers trained",
        "seconds": round(time.perf_counter() - START, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("cuda.json" if device.type == "cuda" else "cuda_smoke_cpu.json")
    path.write_text(json.dumps(results, indent=1) + "\n")
    for key in ("infer_800_amp", "infer_800_fp32", "predict_800_file"):
        r = results[key]
        print(f"{key:<17} ours {r['ours_ms']:.1f} ms, torchvision {r['torchvision_ms']:.1f} ms, ratio {r['ratio']:.3f}")
    r = results["train_b8_800"]
    print(f"train_b8_800      ours {r['ours_images_per_s']:.1f} img/s, torchvision {r['torchvision_images_per_s']:.1f} "
          f"img/s, time ratio {r['ratio']:.3f}")
    print(f"jpeg_decode       {results['jpeg_decode']}")
    print(f"wrote {path} in {results['setup']['seconds']:.0f} s")


if __name__ == "__main__":
    main()
