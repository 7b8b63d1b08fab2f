"""Accuracy on real images: fcos_cli against torchvision's FCOS, same recipe, same data, same COCO evaluation.

The images are real handwriting: scikit-learn's bundled digits (1,797 scans of 8x8 pixels from 43 writers, UCI)
composed into detection scenes (3 to 7 digits of 20 to 110 px on textured paper, short side 320 px), with the
digit scans of the validation scenes kept apart from those of the training scenes. Three runs per seed:

- `torchvision`: `torchvision.models.detection.FCOS` (ResNet-18 + FPN with P6/P7 from P5, BatchNorm, from
  scratch), trained by a plain loop on its own DataLoader;
- `ours_same`: `fcos train` (subprocess) with that recipe: the short side 320 (torchvision's `min_size=320`,
  its floor rounding), no augmentation, SGD 0.01 momentum 0.9 weight decay 1e-4, the same warm-up and cosine
  schedule (fcos_cli's `lr_factor`, applied by both), gradient norm clipped at 10, batch 8, fp32, batches drawn
  at random (no aspect-ratio grouping, as the plain loop);
- `ours_default`: `fcos train` with its defaults, given only the data, the backbone, epochs, batch, the image size
  as torchvision gets it (`--img-size 320 --max-size 1333`: the short side) and `--set data.hflip=0` (a mirrored
  digit is not a digit: the one setting this data asks of any user).

Both are scored by the same `COCOeval` call against the same val.json, twice: one val image at a time (`map`,
`map50`) and 8 a batch in file order (`map_batch8`; GroupNorm statistics include the batch's padding). The wall
time is training (ours: the `fcos train` run, its end-of-training validation included). Prints a table and writes
`<out>/accuracy_<device>.json`.

    python benchmarks/accuracy.py [--quick] [--seeds 0,1,2] [--device cpu|cuda] [--out benchmarks/results]
    python benchmarks/accuracy.py --device cpu --short 160 --fpn-channels 64   # CPU-sized: 8 min a run on 2 cores
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import multiprocessing
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
SHORT_SIDE = 320
RECIPE = dict(epochs=8, batch=8, lr=0.01, momentum=0.9, weight_decay=1e-4, warmup_steps=100, grad_clip=10.0,
              channels=256)
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {message}", file=sys.stderr, flush=True)


# ---- data: handwritten digits composed into scenes -----------------------------------------------------------

def _paper(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A light, uneven background with grain (scanned paper), in a random tint."""
    tint = rng.uniform(170, 250, 3)
    shade = np.linspace(rng.uniform(-25, 0), rng.uniform(0, 25), width)[None, :, None]
    grain = rng.normal(0, 6, (height, width, 1))
    return Image.fromarray(np.clip(tint + shade + grain, 0, 255).astype(np.uint8))


def _scene(rng: np.random.Generator, digits: np.ndarray, labels: np.ndarray, short: int):
    """One image with 3-7 non-overlapping digits; boxes xyxy around the ink (xywh in the COCO file)."""
    long = int(short * rng.uniform(1.0, 1.5))
    width, height = (long, short) if rng.random() < 0.5 else (short, long)
    image = np.asarray(_paper(rng, width, height), dtype=np.float32)
    boxes: list[tuple[list[float], int]] = []
    for _ in range(int(rng.integers(3, 8))):
        pick = int(rng.integers(len(digits)))
        side = int(rng.uniform(20, 110) * short / 320)
        ink = Image.fromarray((digits[pick] * 255 / 16).astype(np.uint8)).resize((side, side), Image.BICUBIC)
        alpha = np.asarray(ink.filter(ImageFilter.GaussianBlur(side / 40)), dtype=np.float32) / 255
        ys, xs = np.nonzero(alpha > 0.25)
        if len(xs) == 0:
            continue
        for _try in range(20):
            x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            box = [x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1]
            if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b, _ in boxes):
                break
        else:
            continue
        colour = rng.uniform(0, 90, 3) if rng.random() < 0.8 else rng.uniform(0, 255, 3) * [1, 0.3, 0.3]
        region = image[y0:y0 + side, x0:x0 + side]
        region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
        boxes.append(([float(v) for v in box], int(labels[pick])))
    return Image.fromarray(image.round().clip(0, 255).astype(np.uint8)), width, height, boxes


def digit_scenes(root: Path, num_train: int, num_val: int, short: int = SHORT_SIDE, seed: int = 0) -> Path:
    """`root/{train,val}.json` (COCO) and `root/images/`; the val scenes use digit scans no train scene uses."""
    from sklearn.datasets import load_digits

    if (root / "val.json").is_file():
        return root
    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    cut = int(len(order) * 0.7)
    (root / "images").mkdir(parents=True, exist_ok=True)
    categories = [{"id": k + 1, "name": str(k)} for k in range(10)]
    for split, count, pool in (("train", num_train, order[:cut]), ("val", num_val, order[cut:])):
        rng = np.random.default_rng([seed, count, len(split)])
        images, annotations = [], []
        for i in range(count):
            image, width, height, boxes = _scene(rng, digits.images[pool], digits.target[pool], short)
            name = f"{split}_{i:04d}.jpg"
            image.save(root / "images" / name, quality=90)
            images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
            for box, label in boxes:
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                    "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        (root / f"{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
    return root


# ---- the same COCO evaluation for both ------------------------------------------------------------------------

def coco_scores(val_json: Path, results: list[dict]) -> dict:
    """mAP (0.5:0.95) and AP50 of `results` (COCO result dicts) by pycocotools against `val_json`."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val_json))
        if not results:
            return {"map": 0.0, "map50": 0.0}
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"map": round(float(evaluator.stats[0]), 4), "map50": round(float(evaluator.stats[1]), 4)}


def _results(image_id: int, boxes: torch.Tensor, scores: torch.Tensor, category_ids: torch.Tensor) -> list[dict]:
    xywh = torchvision.ops.box_convert(boxes.float().cpu(), "xyxy", "xywh")
    return [{"image_id": image_id, "category_id": int(c), "bbox": [round(float(v), 2) for v in b],
             "score": round(float(s), 5)} for b, s, c in zip(xywh, scores.cpu(), category_ids.cpu(), strict=True)]


def _val_images(val_json: Path) -> list[tuple[int, Path]]:
    data = json.loads(val_json.read_text())
    return [(im["id"], val_json.parent / "images" / im["file_name"]) for im in data["images"]]


BATCH = 8  # the second scoring: val images 8 at a time, in file order, as `fcos eval` and training batch them


def scored(val_json: Path, detect) -> dict:
    """mAP/AP50 of `detect` (PIL images -> (boxes xyxy, scores, labels 0..9) each) run on one val image at a time
    (`map`, `map50`: what both tools do for a single photo), and `map_batch8` with 8 images a batch.

    The two differ: the head's GroupNorm takes its statistics over the padded batch, and a batch of landscape and
    portrait scenes is about a third padding, as the random training batches were.
    """
    items = _val_images(val_json)
    images = [Image.open(path).convert("RGB") for _, path in items]

    def results(batch: int) -> list[dict]:
        rows = []
        for start in range(0, len(items), batch):
            for (image_id, _), (boxes, conf, labels) in zip(items[start:start + batch],
                                                          detect(images[start:start + batch]), strict=True):
                rows += _results(image_id, boxes, conf, labels + 1)
        return rows

    return {**coco_scores(val_json, results(1)), f"map_batch{BATCH}": coco_scores(val_json, results(BATCH))["map"]}


# ---- torchvision: its own model, loader and a plain loop ------------------------------------------------------

class CocoFiles(torch.utils.data.Dataset):
    """(0-1 image tensor, {"boxes" xyxy, "labels" 0..9}) per image of a COCO file, as torchvision's models take."""

    def __init__(self, path: Path):
        data = json.loads(path.read_text())
        self.images = data["images"]
        self.boxes: dict[int, list] = {im["id"]: [] for im in self.images}
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            self.boxes[a["image_id"]].append((x, y, x + w, y + h, a["category_id"] - 1))
        self.folder = path.parent / "images"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        info = self.images[i]
        image = torchvision.transforms.functional.to_tensor(Image.open(self.folder / info["file_name"]).convert("RGB"))
        rows = torch.tensor(self.boxes[info["id"]], dtype=torch.float32).reshape(-1, 5)
        return image, {"boxes": rows[:, :4], "labels": rows[:, 4].long()}


def _as_lists(items: list) -> tuple:
    return tuple(zip(*items, strict=True))


def torchvision_fcos(short: int, channels: int = 256) -> torch.nn.Module:
    """ResNet-18 + FPN (P3-P5, P6/P7 from P5) + FCOS head, BatchNorm trained, no pretrained weights."""
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    # what `_resnet_fpn_extractor(resnet18(), 5, [2, 3, 4], LastLevelP6P7(256, 256))` builds, any FPN width
    body = torchvision.models.resnet18(weights=None)
    backbone = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"}, [128, 256, 512], channels,
                               extra_blocks=LastLevelP6P7(channels, channels))
    # min_size = the short side, max_size torchvision's default; score_thresh as ours (0.05, not 0.2) for mAP
    return torchvision.models.detection.FCOS(backbone, num_classes=10, min_size=short, max_size=1333,
                                             score_thresh=0.05)


def train_torchvision(data: Path, seed: int, device: torch.device, workers: int, recipe: dict, short: int,
                      channels: int = 256) -> dict:
    from fcos_cli.config import TrainConfig
    from fcos_cli.engine.train import lr_factor

    start = time.perf_counter()
    torch.manual_seed(seed)
    model = torchvision_fcos(short, channels).to(device)
    loader = torch.utils.data.DataLoader(
        CocoFiles(data / "train.json"), batch_size=recipe["batch"], shuffle=True, num_workers=workers,
        collate_fn=_as_lists, generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]  # as ours: no weight decay on norms and biases
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": recipe["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=recipe["lr"],
                                momentum=recipe["momentum"])
    schedule = TrainConfig(warmup_steps=recipe["warmup_steps"], schedule="cosine")
    total = recipe["epochs"] * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, schedule))
    model.train()
    for epoch in range(recipe["epochs"]):
        for images, targets in loader:
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            loss = sum(model(images, targets).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, recipe["grad_clip"])
            optimizer.step()
            scheduler.step()
        log(f"torchvision seed {seed}: epoch {epoch + 1}/{recipe['epochs']}, loss {loss.item():.3f}")
    wall = time.perf_counter() - start
    model.eval()

    def detect(images: list[Image.Image]) -> list[tuple]:
        with torch.inference_mode():
            outs = model([torchvision.transforms.functional.to_tensor(im).to(device) for im in images])
        return [(o["boxes"], o["scores"], o["labels"]) for o in outs]

    return {**scored(data / "val.json", detect), "wall_s": round(wall, 1)}


# ---- ours: `fcos train` as a user runs it, scored by the same call --------------------------------------------

def same_recipe_args(recipe: dict, short: int) -> list[str]:
    """`fcos train` options giving torchvision's recipe (its resize, no augmentation, the same optimisation)."""
    return ["--img-size", str(short), "--max-size", "1333", "--fpn-channels", str(recipe["channels"]),
            "--set", "data.size_rounding=floor",
            "--set", "data.hflip=0", "--set", "data.color_jitter=false", "--set", "data.aspect_grouping=false",
            "--optimizer", "sgd", "--lr", str(recipe["lr"]), "--set", f"train.momentum={recipe['momentum']}",
            "--set", f"train.weight_decay={recipe['weight_decay']}", "--warmup-steps", str(recipe["warmup_steps"]),
            "--schedule", "cosine", "--grad-clip", str(recipe["grad_clip"])]


def train_ours(data: Path, seed: int, device: torch.device, workers: int, recipe: dict, extra: list[str],
               project: Path, name: str) -> dict:
    import fcos_cli

    command = [sys.executable, "-m", "fcos_cli", "train", "--data", str(data / "train.json"),
               "--val-data", str(data / "val.json"), "--backbone", "resnet18", "--no-pretrained",
               "--epochs", str(recipe["epochs"]), "--batch-size", str(recipe["batch"]),
               "--eval-interval", str(recipe["epochs"]), "--seed", str(seed), "--device", device.type,
               "--workers", str(workers), "--project", str(project), "--name", name, *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"fcos train failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    model, cfg, _names = fcos_cli.load(project / name / "last.safetensors")
    model.to(device)

    def detect(images: list[Image.Image]) -> list[tuple]:
        return [(d["boxes"], d["scores"], d["labels"]) for d in fcos_cli.predict(model, cfg, images, len(images))]

    log(f"{name}: {' '.join(command[2:])}")
    return {**scored(data / "val.json", detect), "wall_s": round(wall, 1)}


# ---- main ---------------------------------------------------------------------------------------------------

def run_seed(seed: int, data: Path, device: torch.device, workers: int, recipe: dict, short: int,
             variants: dict[str, list[str]], work: Path) -> dict[str, dict]:
    """Every run of one seed, in order: torchvision, then ours with each variant's `fcos train` options."""
    rows = {"torchvision": {"seed": seed, **train_torchvision(data, seed, device, workers, recipe, short,
                                                              recipe["channels"])}}
    log(f"torchvision seed {seed}: {rows['torchvision']}")
    for key, extra in variants.items():
        rows[key] = {"seed": seed, **train_ours(data, seed, device, workers, recipe, extra, work / "runs",
                                                f"{key}_{seed}")}
        log(f"{key} seed {seed}: {rows[key]}")
    return rows


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    recipe = dict(RECIPE, channels=args.fpn_channels)
    num_train, num_val, short = (600, 150, args.short) if not args.quick else (8, 4, 96)
    if args.quick:
        recipe.update(epochs=1, batch=4, warmup_steps=1, channels=64)
    variants = {"ours_same": same_recipe_args(recipe, short)}
    if not args.quick:  # quick (tests): one run of ours, the same code path
        variants["ours_default"] = ["--img-size", str(short), "--max-size", "1333", "--set", "data.hflip=0"]
        if recipe["channels"] != RECIPE["channels"]:  # a narrow FPN (a CPU-sized run): the same for every run
            variants["ours_default"] += ["--fpn-channels", str(recipe["channels"])]
    variants.update(args.variant)
    for name in args.skip:
        if variants.pop(name, None) is None:
            raise SystemExit(f"error: --skip {name}: no such run of ours (runs: {', '.join(variants)})")
    data = digit_scenes(args.work / f"digits_{num_train}_{num_val}_{short}", num_train, num_val, short)
    jobs = [(seed, data, device, args.workers, recipe, short, variants, args.work) for seed in args.seeds]
    if args.jobs > 1:  # seeds side by side (a big GPU); every variant then runs under the same load
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            per_seed = list(pool.map(run_seed, *zip(*jobs, strict=True)))
    else:
        per_seed = [run_seed(*job) for job in jobs]
    rows = {key: [seed_rows[key] for seed_rows in per_seed] for key in per_seed[0]}
    metrics = ("map", "map50", f"map_batch{BATCH}", "wall_s")
    summary = {key: {m: round(statistics.mean(r[m] for r in runs), 4) for m in metrics}
               for key, runs in rows.items()}
    return {"device": device.type, "data": {"train": num_train, "val": num_val, "short_side": short,
                                            "source": "sklearn load_digits scenes"},
            "recipe": recipe, "seeds": args.seeds, "jobs": args.jobs, "runs": rows, "mean": summary,
            "commands": {key: " ".join(extra) for key, extra in variants.items()}}


def _variant(text: str) -> tuple[str, list[str]]:
    name, _, options = text.partition("=")
    return name, shlex.split(options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 train / 4 val scenes at 96 px, 1 epoch, narrow FPN (tests)")
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    parser.add_argument("--short", type=int, default=SHORT_SIDE, help="short side of the scenes (160: a CPU-sized run)")
    parser.add_argument("--fpn-channels", type=int, default=RECIPE["channels"], help="FPN and head width of all runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2, help="data-loading workers of both")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run side by side (wall times then under load)")
    parser.add_argument("--variant", type=_variant, action="append", default=[],
                        help='more runs of ours: NAME="fcos train options" (repeatable)')
    parser.add_argument("--skip", action="append", default=[],
                        help="leave out a run of ours, e.g. ours_default (repeatable; torchvision always runs)")
    parser.add_argument("--work", type=Path, default=Path("runs/accuracy"), help="scenes and runs go here")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    result = run(args)
    print(f"{'run':24} {'mAP':>7} {'AP50':>7} {'mAP b8':>7} {'wall s':>8}   (mean of seeds {args.seeds}, "
          f"{result['device']}; b8: val images 8 a batch)")
    for key, m in result["mean"].items():
        print(f"{key:24} {m['map']:7.3f} {m['map50']:7.3f} {m[f'map_batch{BATCH}']:7.3f} {m['wall_s']:8.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    size = "" if args.short == SHORT_SIDE or args.quick else f"_{args.short}"
    width = "" if args.fpn_channels == RECIPE["channels"] or args.quick else f"_fpn{args.fpn_channels}"
    path = args.out / f"accuracy_{result['device']}{size}{width}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
