"""End-to-end speed as users feel it: JPEG files in, annotated files or trained weights out (ours / torchvision).

Rows (each side runs as its own subprocess, `python -m fcos_cli ...` against the loop a user writes with torchvision):

- `predict_e2e`: `fcos predict DIR -w W` (its default path: bf16 on a CPU with native bf16) on a folder of photo-sized
  JPEGs (1200 x 800, where torchvision's min_size 800 / max_size 1333 and our imported weights' resize agree) against
  PIL.Image.open -> to_tensor -> fcos_resnet50_fpn -> draw_bounding_boxes -> save, both drawing scores >= 0.25.
  The weights: torchvision's `fcos_resnet50_fpn(weights=None, weights_backbone=None)` with seed 0, the class-logit bias
  of the 80 COCO slots raised (the 11 unused slots at -30, as trained COCO weights keep them) by the amount that gives
  about 50 detections >= 0.25 per image (found by bisection on the head outputs of the first photo), saved as a
  state_dict (.pth) for the torchvision loop and converted by `fcos_cli.import_weights` (`fcos import-weights --from
  torchvision`) into our safetensors: both compute the same detections.
- `train_e2e`: `fcos train` (R-50, `--no-pretrained`, data loading, augmentation, logging and checkpoints included,
  no validation) over `--epochs` epochs of a generated COCO folder of 640-px JPEGs, against a torchvision
  reference-style loop (fcos_resnet50_fpn random init, its own Dataset/DataLoader with as many workers, SGD, a
  checkpoint per epoch, no augmentation), both float32; `train_e2e_amp`: ours with `--amp` against the same
  torchvision float32 loop. Images/s from the start of training to the end of the last epoch's steps (ours: the
  `seconds` of metrics.csv); `*_wall_s` is the whole command, start-up included.
- `loader`: images/s of our data pipeline alone (the Dataset + DataLoader of the train engine, 64 images, worker
  start-up included) at 640 and 800 px with 0, 1 and N (all cores) workers, next to the model's train step alone
  (R-50, float32, batch 2) at that size.
- `jpeg_readers`: images/s of PIL, fcos_cli's `read_image` (OpenCV for JPEGs, PIL otherwise; EXIF applied), torchvision.io.decode_jpeg and OpenCV
  (cv2.imdecode) on the same files, each to an H x W x 3 RGB uint8 array (what the pipeline consumes).

The images are generated scenes (fcos_cli.data.synthetic), not photographs: they compress better than photos, so the
JPEG decoding share is a little lower than with real photos. Writes the rows into `<out>/cpu.json` (other rows kept).

    python benchmarks/e2e.py [--quick] [--out benchmarks/results] [--photos 24] [--train-images 16] [--batch 4]
                             [--epochs 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"predict_e2e": 0.40, "train_e2e": 0.90, "train_e2e_amp": 0.60}
CONF = 0.25  # `fcos predict`'s default --conf; the torchvision loop draws the same
TARGET_DETECTIONS = 50  # per image at CONF
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


def child_env(parallel: bool) -> dict[str, str]:
    """This checkout first on the path (not an installed fcos_cli), no network, wide rich output; one thread each
    for children that run in parallel."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    threads = {"OMP_NUM_THREADS": "1"} if parallel else {}
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "COLUMNS": "200",
            **threads}


def run_children(commands: dict[str, list[str]], parallel: bool) -> dict[str, tuple[float, str]]:
    """Wall seconds and stdout of each command; one after the other (timed runs) or all at once (--quick)."""

    def one(cmd: list[str]) -> tuple[float, str]:
        began = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(parallel), cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}{done.stdout[-2000:]}")
        return time.perf_counter() - began, done.stdout

    if not parallel:
        out = {}
        for name, cmd in commands.items():
            out[name] = one(cmd)
            log(f"{name}: {out[name][0]:.1f} s")
        return out
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {name: pool.submit(one, cmd) for name, cmd in commands.items()}
        return {name: f.result() for name, f in futures.items()}


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


# ---- data -----------------------------------------------------------------------------------------------------------

def write_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """`count` generated scenes resized to `size` (W, H), as JPEG quality 90."""
    from fcos_cli.data.synthetic import demo_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:03d}.jpg"
        demo_scene(seed=i, max_side=max(size)).resize(size).save(path, quality=90)
        paths.append(path)
    return paths


def tv_fcos(arch: str, num_classes: int, min_size: int, max_size: int) -> torch.nn.Module:
    """`fcos_resnet50_fpn(weights=None, weights_backbone=None, ...)` for any torchvision ResNet (resnet18 for --quick):
    all layers trainable, BatchNorm2d, P6/P7 from P5."""
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    body = getattr(torchvision.models, arch)(weights=None)
    backbone = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    return torchvision.models.detection.FCOS(backbone, num_classes, min_size=min_size, max_size=max_size)


def make_weights(folder: Path, photos: list[Path], size: tuple[int, int] | None) -> tuple[Path, Path, float]:
    """torchvision's R-50 FCOS (seed 0) with the COCO class bias raised to give ~TARGET_DETECTIONS per image on
    `photos`, as a .pth state dict and as our safetensors (`import_weights`). Returns both paths and the bias shift."""
    from PIL import Image
    from torchvision.models.detection.image_list import ImageList
    from torchvision.transforms.functional import to_tensor

    from fcos_cli.compat import COCO_CATEGORY_IDS
    from fcos_cli.import_weights import import_weights

    torch.manual_seed(0)
    kwargs = {"min_size": min(size), "max_size": max(size)} if size else {}
    tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, **kwargs).eval()
    bias = tv.head.classification_head.cls_logits.bias
    used = torch.zeros(bias.numel(), dtype=torch.bool)
    used[COCO_CATEGORY_IDS] = True
    with torch.no_grad():
        bias.copy_(torch.where(used, 0.0, -30.0))
        images, _ = tv.transform([to_tensor(Image.open(photo).convert("RGB")) for photo in photos])
        features = list(tv.backbone(images.tensors).values())
        head = tv.head(features)
        anchors = tv.anchor_generator(ImageList(images.tensors, images.image_sizes), features)
    counts = [f.shape[2] * f.shape[3] for f in features]
    split_anchors = [list(a.split(counts)) for a in anchors]

    def detections(shift: float) -> float:
        outputs = {k: list((v + shift * used if k == "cls_logits" else v).split(counts, dim=1)) for k, v in head.items()}
        with torch.no_grad():
            found = tv.postprocess_detections(outputs, split_anchors, images.image_sizes)
        return sum(int((det["scores"] >= CONF).sum()) for det in found) / len(found)

    low, high = -20.0, 20.0  # detections grow with the shift: bisect for TARGET_DETECTIONS
    for _ in range(24):
        mid = (low + high) / 2
        low, high = (mid, high) if detections(mid) < TARGET_DETECTIONS else (low, mid)
    with torch.no_grad():
        bias.add_(high * used)
    pth = folder / "fcos_resnet50_fpn_coco.pth"
    torch.save(tv.state_dict(), pth)
    ours = folder / "fcos_resnet50_fpn_coco.safetensors"
    report = import_weights(pth, "torchvision", ours)
    assert report.complete and report.written == ours, report
    return pth, ours, high


# ---- children: the torchvision loops --------------------------------------------------------------------------------

def tv_predict_child(images: Path, weights: Path, out: Path, size: tuple[int, int] | None) -> None:
    """The loop a user writes with torchvision, batch 1; prints its images, seconds and detections drawn."""
    from PIL import Image
    from torchvision.models.detection import FCOS_ResNet50_FPN_Weights
    from torchvision.transforms.functional import to_pil_image, to_tensor
    from torchvision.utils import draw_bounding_boxes

    names = FCOS_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    kwargs = {"min_size": min(size), "max_size": max(size)} if size else {}
    model = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(images.glob("*.jpg"))
    drawn = 0
    began = time.perf_counter()
    with torch.no_grad():
        for path in files:
            image = to_tensor(Image.open(path).convert("RGB"))
            det = model([image])[0]
            keep = det["scores"] >= CONF
            labels = [f"{names[k]} {s:.2f}" for k, s in zip(det["labels"][keep].tolist(), det["scores"][keep].tolist(), strict=True)]
            picture = draw_bounding_boxes((image * 255).to(torch.uint8), det["boxes"][keep], labels, width=2)
            to_pil_image(picture).save(out / path.name)
            drawn += len(labels)
    print(json.dumps({"images": len(files), "seconds": time.perf_counter() - began, "detections": drawn}))


class CocoFiles(torch.utils.data.Dataset):
    """torchvision's references/detection style: PIL -> float tensor, boxes xyxy, no augmentation."""

    def __init__(self, annotations: Path) -> None:
        data = json.loads(annotations.read_text())
        ids = sorted(c["id"] for c in data["categories"])
        self.num_classes = len(ids)
        boxes: dict[int, list] = {im["id"]: [] for im in data["images"]}
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            boxes[a["image_id"]].append(([x, y, x + w, y + h], ids.index(a["category_id"])))
        self.items = [(annotations.parent / im["file_name"], boxes[im["id"]]) for im in data["images"]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        path, objects = self.items[index]
        image = pil_to_tensor(Image.open(path).convert("RGB")).float() / 255
        boxes = torch.tensor([b for b, _ in objects], dtype=torch.float32).reshape(-1, 4)
        return image, {"boxes": boxes, "labels": torch.tensor([k for _, k in objects], dtype=torch.int64)}


def _as_lists(batch):
    return tuple(zip(*batch, strict=True))


def tv_train_child(annotations: Path, arch: str, size: int, epochs: int, batch: int, workers: int, out: Path) -> None:
    """torchvision's reference training loop, float32; prints images and seconds up to the end of the last epoch's
    steps (a checkpoint after each earlier epoch included, as `fcos train`'s metrics.csv counts them)."""
    dataset = CocoFiles(annotations)
    data = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                       collate_fn=_as_lists)
    torch.manual_seed(0)
    model = tv_fcos(arch, dataset.num_classes, size, size).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                weight_decay=1e-4)
    out.mkdir(parents=True, exist_ok=True)
    seen, began = 0, time.perf_counter()
    for epoch in range(epochs):
        for images, targets in data:
            losses = model(list(images), list(targets))
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # logged every step by the reference's MetricLogger
            seen += len(images)
        seconds = time.perf_counter() - began
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                   out / "checkpoint.pth")
    print(json.dumps({"images": seen, "seconds": seconds}))


# ---- rows -----------------------------------------------------------------------------------------------------------

def bench_predict(work: Path, photos: list[Path], size: tuple[int, int] | None, parallel: bool) -> dict:
    pth, ours_weights, shift = make_weights(work, photos[:2], size)
    log(f"weights: class bias {shift:+.2f} for ~{TARGET_DETECTIONS} detections per image")
    folder = photos[0].parent
    ours_cmd = [sys.executable, "-m", "fcos_cli", "predict", str(folder), "-w", str(ours_weights), "--project",
                str(work / "predict"), "--name", "ours"]
    if size:  # --quick: small images, at their own size on both sides
        ours_cmd += ["--img-size", str(min(size)), "--max-size", str(max(size))]
    tv_cmd = [sys.executable, __file__, "--child", "tv-predict", "--images", str(folder), "--weights", str(pth),
              "--child-out", str(work / "predict" / "torchvision")]
    if size:
        tv_cmd += ["--size", f"{size[0]},{size[1]}"]
    done = run_children({"predict ours": ours_cmd, "predict torchvision": tv_cmd}, parallel)
    (ours_wall, ours_out), (tv_wall, tv_out) = done["predict ours"], done["predict torchvision"]
    tv = last_json(tv_out)
    found = re.search(r"(\d+) images in ([\d.]+) s", ours_out)
    ours_seconds = float(found[2]) if found else ours_wall  # the loop, without start-up and model loading
    ours_detections = len(json.loads((work / "predict" / "ours" / "predictions.json").read_text()))
    n = len(photos)
    return {"ours_images_per_s": round(n / ours_seconds, 3), "torchvision_images_per_s": round(n / tv["seconds"], 3),
            "ratio": round(ours_seconds / tv["seconds"], 3), "ours_wall_s": round(ours_wall, 1),
            "torchvision_wall_s": round(tv_wall, 1), "wall_ratio": round(ours_wall / tv_wall, 3),
            "detections_per_image": {"ours": round(ours_detections / n, 1), "torchvision": round(tv["detections"] / n, 1)},
            "images": n, "size": list(size or (1200, 800)), "class_bias": round(shift, 3)}


def bench_train(work: Path, annotations: Path, arch: str, size: int, epochs: int, batch: int, workers: int,
                parallel: bool) -> dict:
    def ours_cmd(name: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "fcos_cli", "train", "--data", str(annotations), "--no-pretrained", "--backbone",
                arch, "--img-size", str(size), "--epochs", str(epochs), "--batch-size", str(batch), "--workers",
                str(workers), "--project", str(work / "train"), "--name", name, *extra]

    tv_cmd = [sys.executable, __file__, "--child", "tv-train", "--data", str(annotations), "--arch", arch, "--size",
              str(size), "--epochs", str(epochs), "--batch", str(batch), "--workers", str(workers), "--child-out",
              str(work / "train" / "torchvision")]
    done = run_children({"train ours fp32": ours_cmd("fp32"), "train torchvision fp32": tv_cmd,
                         "train ours --amp": ours_cmd("amp", "--amp")}, parallel)
    tv = last_json(done["train torchvision fp32"][1])
    tv_ips = tv["images"] / tv["seconds"]

    def ours(name: str) -> tuple[float, float]:
        with open(work / "train" / name / "metrics.csv") as f:
            seconds = float(list(csv.DictReader(f))[-1]["seconds"])
        return tv["images"] / seconds, done[f"train ours {'fp32' if name == 'fp32' else '--amp'}"][0]

    rows = {}
    for key, name in (("train_e2e", "fp32"), ("train_e2e_amp", "amp")):
        ips, wall = ours(name)
        rows[key] = {"ours_images_per_s": round(ips, 3), "torchvision_images_per_s": round(tv_ips, 3),
                     "ratio": round(tv_ips / ips, 3), "ours_wall_s": round(wall, 1),
                     "torchvision_wall_s": round(done["train torchvision fp32"][0], 1)}
    rows["train_e2e"]["setup"] = (f"{arch}, {tv['images'] // epochs} images of longest side {size}, batch {batch}, "
                                  f"{epochs} epochs, {workers} loader workers; torchvision float32 in both rows")
    return rows


def model_step_images_per_s(arch: str, batch, num_classes: int) -> float:
    """Our train step alone (forward, loss, backward, SGD; float32) on one loader batch: images/s of the 2nd step."""
    from fcos_cli.config import FCOSConfig
    from fcos_cli.model import build_model
    from fcos_cli.model.optimize import speed_up_training
    from fcos_cli.pipeline import loss_for

    cfg = FCOSConfig()
    cfg.model.backbone.name, cfg.model.backbone.pretrained, cfg.model.num_classes = arch, False, num_classes
    torch.manual_seed(0)
    model = speed_up_training(build_model(cfg.model)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)
    boxes, labels = [t["boxes"] for t in batch.targets], [t["labels"] for t in batch.targets]
    for _ in range(2):
        began = time.perf_counter()
        loss_for(model(batch.images), model.strides, boxes, labels, cfg).total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return len(batch.images) / (time.perf_counter() - began)


def bench_loader(annotations: Path, sizes: list[int], workers: list[int], batch: int, num_images: int,
                 arch: str) -> dict:
    """Our DataLoader alone (train transform: resize, flip, colour jitter; collate) over `num_images` (the files
    repeated), worker start-up included as in an epoch; and the model's train step alone at the same size."""
    from dataclasses import replace

    from timm.data import IMAGENET_DEFAULT_MEAN

    from fcos_cli.config import FCOSConfig
    from fcos_cli.data import open_split
    from fcos_cli.engine.common import loader

    index = open_split(annotations)
    many = replace(index, records=(index.records * -(-num_images // len(index.records)))[:num_images])
    rows = {}
    for size in sizes:
        cfg = FCOSConfig()
        cfg.data.img_size, cfg.train.batch_size = size, batch
        row = {}
        for w in workers:
            began = time.perf_counter()
            seen = sum(len(b.images) for b in loader(many, cfg, IMAGENET_DEFAULT_MEAN, train=True, workers=w))
            row[f"workers_{w}"] = round(seen / (time.perf_counter() - began), 2)
        first = next(iter(loader(index, cfg, IMAGENET_DEFAULT_MEAN, train=True, workers=0, batch_size=2)))
        row["model_step"] = round(model_step_images_per_s(arch, first, len(index.class_names)), 3)
        rows[str(size)] = row
        log(f"loader {size}: {row}")
    return rows


def readers() -> dict:
    """Each reader: path -> H x W x 3 RGB uint8 numpy array, EXIF orientation applied."""
    import cv2
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from fcos_cli.data.dataset import read_image

    def pil(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    def tv(path: Path) -> np.ndarray:
        chw = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
        return np.ascontiguousarray(chw.permute(1, 2, 0).numpy())

    def opencv(path: Path) -> np.ndarray:
        bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    return {"pil": pil, "fcos_cli_read_image": read_image, "torchvision_decode_jpeg": tv, "opencv_imdecode": opencv}


def bench_readers(sets: dict[str, list[Path]], repeats: int) -> dict:
    """Images/s of each reader on each set of files (median of `repeats` passes, readers taking turns)."""
    fns = readers()
    rows = {}
    for name, files in sets.items():
        reference = fns["pil"](files[0])
        for fn in fns.values():  # same pixels out (decoders may round differently: compare loosely)
            pixels = fn(files[0])
            assert pixels.shape == reference.shape and pixels.dtype == np.uint8, (fn, pixels.shape)
            assert np.abs(pixels.astype(int) - reference).mean() < 2, fn
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for key, fn in fns.items():
                began = time.perf_counter()
                for path in files:
                    fn(path)
                times[key].append(time.perf_counter() - began)
        row = {k: round(len(files) / statistics.median(t), 1) for k, t in times.items()}
        row["fastest"] = max(fns, key=lambda k: row[k])
        rows[name] = row
    return rows


# ---- run ------------------------------------------------------------------------------------------------------------

def defaults(quick: bool) -> dict[str, int]:
    """The counts of a run: photos, training images, batch, epochs, loader workers of both training loops."""
    values = (2, 4, 2, 1, 0) if quick else (24, 16, 4, 2, 2)
    return dict(zip(("photos", "train_images", "batch", "epochs", "workers"), values, strict=True))


def run(quick: bool, photos: int, train_images: int, batch: int, epochs: int, workers: int) -> dict:
    """Every e2e row; `quick`: tiny sizes, resnet18 for training, subprocesses in parallel (for tests)."""
    from fcos_cli.data.synthetic import write_demo_data

    photo_size = (240, 160) if quick else (1200, 800)
    arch, train_size = ("resnet18", 128) if quick else ("resnet50", 640)
    loader_sizes = [128, 160] if quick else [640, 800]
    loader_workers = sorted({0, 1, os.cpu_count() or 1})
    with tempfile.TemporaryDirectory(prefix="fcos_e2e_") as tmp:
        work = Path(tmp)
        files = write_photos(work / "photos", photos, photo_size)
        demo = write_demo_data(work / "coco", num_train=train_images, num_val=1, max_side=train_size)
        annotations = demo / "train.json"
        log(f"data written: {photos} photos {photo_size[0]}x{photo_size[1]}, {train_images} training images")
        results = {"predict_e2e": bench_predict(work, files, photo_size if quick else None, parallel=quick)}
        log("predict_e2e done")
        results.update(bench_train(work, annotations, arch, train_size, epochs, batch, workers, parallel=quick))
        log("train_e2e done")
        results["loader"] = bench_loader(annotations, loader_sizes, loader_workers, batch, 8 if quick else 64,
                                         "test_resnet" if quick else arch)
        train_files = sorted((demo / "images").glob("train_*.jpg"))
        results["jpeg_readers"] = bench_readers({f"photos_{photo_size[0]}x{photo_size[1]}": files,
                                                 f"train_{train_size}": train_files}, 1 if quick else 3)
        log("loader and readers done")
    results["e2e_setup"] = {
        "quick": quick, "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "photos": f"{photos} generated scenes {photo_size[0]}x{photo_size[1]}",
        "train": results["train_e2e"].pop("setup"),
    }
    return results


def print_rows(results: dict) -> None:
    """The e2e rows as lines (run.py prints them under its table)."""
    def goal(key: str, ratio: float) -> str:
        return f"goal <= {GOALS[key]} {'met' if ratio <= GOALS[key] else 'MISSED'}" if key in GOALS else ""

    p = results["predict_e2e"]
    print(f"predict_e2e    {p['images']} JPEGs {p['size'][0]}x{p['size'][1]} -> annotated files: ours "
          f"{p['ours_images_per_s']:.2f} img/s, torchvision loop {p['torchvision_images_per_s']:.2f} img/s, time ratio "
          f"{p['ratio']:.3f} {goal('predict_e2e', p['ratio'])} (whole commands {p['ours_wall_s']:.0f} s / "
          f"{p['torchvision_wall_s']:.0f} s = {p['wall_ratio']:.3f}; detections per image {p['detections_per_image']})")
    for key, what in (("train_e2e", "fp32"), ("train_e2e_amp", "ours --amp vs torchvision fp32")):
        r = results[key]
        print(f"{key:<14} {what}: ours {r['ours_images_per_s']:.3f} img/s, torchvision {r['torchvision_images_per_s']:.3f}"
              f" img/s, time ratio {r['ratio']:.3f} {goal(key, r['ratio'])} (whole commands {r['ours_wall_s']:.0f} s / "
              f"{r['torchvision_wall_s']:.0f} s)")
    for size, row in results["loader"].items():
        loading = ", ".join(f"{k.replace('_', ' ')}: {v:.1f}" for k, v in row.items() if k.startswith("workers"))
        print(f"loader {size:<7} our data pipeline img/s ({loading}); model train step alone {row['model_step']:.2f} img/s")
    for name, row in results["jpeg_readers"].items():
        rates = ", ".join(f"{k} {v:.0f}" for k, v in row.items() if k != "fastest")
        print(f"jpeg_readers   {name}: img/s {rates}; fastest {row['fastest']}")
    s = results["e2e_setup"]
    print(f"e2e: {s['train']}; threads {s['threads']}, load average (1 min) at the end {s['load_average_1m_at_end']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, children in parallel (for tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder of cpu.json (its other rows are kept)")
    parser.add_argument("--photos", type=int, help="photo-sized JPEGs for predict_e2e [24; quick 2]")
    parser.add_argument("--train-images", type=int, help="generated training images [16; quick 4]")
    parser.add_argument("--batch", type=int, help="training batch [4; quick 2]")
    parser.add_argument("--epochs", type=int, help="training epochs [2; quick 1]")
    parser.add_argument("--workers", type=int, help="loader workers of both training loops [2; quick 0]")
    child = parser.add_argument_group("children (internal)")
    child.add_argument("--child", choices=["tv-predict", "tv-train"], help=argparse.SUPPRESS)
    for name in ("--images", "--weights", "--data", "--child-out"):
        child.add_argument(name, type=Path, help=argparse.SUPPRESS)
    child.add_argument("--size", help=argparse.SUPPRESS)
    child.add_argument("--arch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "tv-predict":
        size = tuple(int(v) for v in args.size.split(",")) if args.size else None
        return tv_predict_child(args.images, args.weights, args.child_out, size)
    if args.child == "tv-train":
        return tv_train_child(args.data, args.arch, int(args.size), args.epochs, args.batch, args.workers,
                              args.child_out)
    if args.quick:  # one thread, robust on a machine busy with other tests (run.py does the same)
        torch.set_num_threads(1)
    sizes = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults(args.quick).items()}
    results = run(args.quick, **sizes)
    print_rows(results)
    path = args.out / "cpu.json"
    args.out.mkdir(parents=True, exist_ok=True)
    stored = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**stored, **results}, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
