"""Regenerate every figure in docs/ from a clean checkout, on the CPU: `python docs/make_figures.py`.

Each figure comes from our own commands (`fcos inspect-targets`, `fcos train`, run in this process) or from
the library's public functions (`fcos_cli.targets`, `fcos_cli.inspect_targets`, `fcos_cli.load`), so the
pictures in docs/fcos.md and the README cannot drift from the code. `--quick` uses tiny settings (the test
suite runs it into a temporary folder); `--out DIR` writes the PNGs elsewhere than docs/.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

DOCS = Path(__file__).resolve().parent
STRIDES = [8, 16, 32, 64, 128]
REASON_COLOURS = {"outside_center_region": "tab:orange", "size_out_of_range": "tab:purple",
                  "taken_by_smaller_box": "tab:red"}
DEMO_IMAGE = "train_0004"  # the demo image the README shows: five objects from 20 to 700 px


def run_fcos(*args: str) -> None:
    """Run one `fcos` command as a user would, in this process (no second torch import); its output is kept
    and shown only if it fails."""
    from fcos_cli.cli import app

    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = app(list(args), prog_name="fcos", standalone_mode=False)  # an error exit is returned
        if code not in (None, 0):
            raise RuntimeError(f"exit code {code}")
    except BaseException:
        print(f"`fcos {' '.join(args)}` failed:\n{output.getvalue()}", file=sys.stderr)
        raise


def save(fig_or_image, path: Path, colours: int = 128) -> Path:
    """A small PNG: matplotlib figures at 80 dpi, then a palette of `colours` colours."""
    if isinstance(fig_or_image, Image.Image):
        image = fig_or_image
    else:
        fig_or_image.savefig(path, dpi=80)
        plt.close(fig_or_image)
        image = Image.open(path).convert("RGB")
    image.convert("RGB").quantize(colors=colours).save(path, optimize=True)
    return path


def strip(paths: list[Path | Image.Image], scale: float = 0.5) -> Image.Image:
    """Images (files or PIL images) side by side on white, scaled down."""
    panels = [(p if isinstance(p, Image.Image) else Image.open(p)).convert("RGB") for p in paths]
    out = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width
    return out.resize((int(out.width * scale), int(out.height * scale)), Image.LANCZOS)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------ figures


def points_grid(out: Path, size: int = 256) -> Path:
    """Points of each level on a 256x256 input: ours at cell centres, torchvision's at cell corners."""
    from fcos_cli.config import preset
    from fcos_cli.inspect_targets import points_for_image

    ours = points_for_image(size, size, STRIDES, preset("improved").targets)
    theirs = points_for_image(size, size, STRIDES, preset("torchvision").targets)
    fig, axes = plt.subplots(1, 5, figsize=(12.5, 2.9))
    start = 0
    for ax, count, (h, w), stride in zip(axes, ours.num_per_level, ours.sizes, STRIDES, strict=True):
        xy, tv = ours.xy[start:start + count], theirs.xy[start:start + count]
        start += count
        for k in range(0, max(h, w) * stride + 1, stride):
            ax.axhline(k, color="0.85", lw=0.6)
            ax.axvline(k, color="0.85", lw=0.6)
        ax.add_patch(plt.Rectangle((0, 0), size, size, fill=False, ec="black", lw=1))
        dot = max(1.5, 30 / h)
        ax.scatter(tv[:, 0], tv[:, 1], s=dot * 3, facecolors="none", edgecolors="tab:red", linewidths=0.6)
        ax.scatter(xy[:, 0], xy[:, 1], s=dot * 3, c="tab:blue")
        ax.set(xlim=(-8, max(size, w * stride) + 8), ylim=(max(size, h * stride) + 8, -8), aspect="equal")
        ax.set_title(f"P{STRIDES.index(stride) + 3}: stride {stride}, {h}x{w} points", fontsize=9)
        ax.set_xticks([0, size])
        ax.set_yticks([0, size])
    axes[0].legend(axes[0].collections[:2], ["torchvision (offset 0)", "fcos_cli (s*i + s//2)"], loc="lower left",
                   fontsize=7)
    fig.suptitle(f"One point per feature cell: a {size}x{size} input, cell borders in grey", fontsize=10)
    fig.tight_layout()
    return save(fig, out / "points_grid.png")


def rejected_points(run: Path, out: Path, image_size: int) -> Path:
    """Every point inside a box of the demo image, per level: positive, or why not (inspect-targets CSVs)."""
    from fcos_cli.data import open_split
    from fcos_cli.data.dataset import DetectionDataset
    from fcos_cli.data.transforms import build_transform

    index = open_split("demo", "train")
    rank = [r.path.stem for r in index.records].index(DEMO_IMAGE)
    image, target, _ = DetectionDataset(index.records[rank:rank + 1], build_transform(image_size, train=False))[0]
    positives = [r for r in read_csv(run / "positives.csv") if r["image"].startswith(DEMO_IMAGE)]
    rejected = [r for r in read_csv(run / "rejected.csv") if r["image"].startswith(DEMO_IMAGE)]
    levels = [3, 4, 5, 6]
    fig, axes = plt.subplots(1, len(levels), figsize=(3.4 * len(levels), 3.2))
    for ax, level in zip(axes, levels, strict=True):
        ax.imshow(image.permute(1, 2, 0).numpy(), alpha=0.45)
        for box in target["boxes"].tolist():
            ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="0.2", lw=0.8))
        for reason, colour in REASON_COLOURS.items():
            mine = [r for r in rejected if int(r["level"]) == level and r["reason"] == reason]
            size = 40 if reason == "taken_by_smaller_box" else 5 if level == 3 else 9  # rare: make it visible
            ax.scatter([float(r["x"]) for r in mine], [float(r["y"]) for r in mine], s=size,
                       c=colour, label=reason.replace("_", " "), linewidths=0)
        mine = [r for r in positives if int(r["level"]) == level]
        ax.scatter([float(r["x"]) for r in mine], [float(r["y"]) for r in mine], s=14, c="tab:green",
                   edgecolors="black", linewidths=0.4, label="positive")
        ax.set_title(f"P{level} (stride {2 ** level}): {len(mine)} positives", fontsize=9)
        ax.set_axis_off()
    axes[0].legend(loc="lower left", fontsize=6, markerscale=1.5, framealpha=0.9)
    fig.suptitle(f"Points inside a box of {DEMO_IMAGE}: positive, or the reason code of rejected.csv", fontsize=10)
    fig.tight_layout()
    return save(fig, out / "negatives.png")


def ambiguous_level(run: Path) -> int:
    """The level with the most points eligible for two boxes."""
    levels = [int(r["level"]) for r in read_csv(run / "positives.csv") if r["ambiguous"] == "True"]
    return max(set(levels), key=levels.count) if levels else 5


def min_area(run: Path, out: Path) -> Path:
    level = ambiguous_level(run)
    return save(strip([run / f"overlap_P{lvl}.png" for lvl in (3, level)], scale=0.75), out / "min_area.png")


def center_sampling(paper: Path, improved: Path, out: Path) -> Path:
    """The demo image's P5 under both presets, and positives per level with BPR, from stats.json."""
    stats = json.loads((improved / "stats.json").read_text())
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), gridspec_kw={"width_ratios": [1.3, 1.3, 1]})
    for ax, run, title in ((axes[0], paper, "paper: every point inside the box (P5)"),
                           (axes[1], improved, "improved: center sampling 1.5 strides (P5)")):
        ax.imshow(Image.open(run / f"{DEMO_IMAGE}_P5.png").convert("RGB"))
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    ax = axes[2]
    names = list(stats["chosen"]["positives_per_level"])
    for shift, key in ((-0.2, "center sampling off"), (0.2, "center sampling 1.5")):
        s = stats[key]
        ax.bar([i + shift for i in range(len(names))], list(s["positives_per_level"].values()), width=0.4,
               label=f"{key}: {s['positives']} positives, BPR {s['bpr']:.2f}")
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel="positive points")
    ax.set_title("positives per level, 5 demo images (stats.json)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out / "center_sampling.png")


def size_ranges(paper: Path, out: Path) -> Path:
    """max(l, t, r, b) of every positive per level: in pixels (the ranges m_i) and in strides (what s_i scales)."""
    rows = read_csv(paper / "positives.csv")
    bounds = [0, 64, 128, 256, 512]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    for level in (3, 4, 5, 6, 7):
        mine = [max(float(r[k]) for k in "ltrb") for r in rows if int(r["level"]) == level]
        if not mine:
            continue
        left.hist(mine, bins=[2 ** (k / 4) for k in range(8, 44)], alpha=0.6, label=f"P{level}")
        right.hist([m / 2 ** level for m in mine], bins=[k / 4 for k in range(0, 49)], alpha=0.6, label=f"P{level}")
    for b in bounds[1:]:
        left.axvline(b, color="black", ls="--", lw=0.8)
    left.set(xscale="log", xlabel="max(l, t, r, b) in pixels; dashed: m_1..m_4 = 64, 128, 256, 512",
             ylabel="positive points", title="Size ranges send each box to one level")
    right.set(xlabel="max(l, t, r, b) / stride: 4 to 8 on P4-P6 (m_(i-1) / s_i to m_i / s_i)",
              title="Divided by the stride, every level sees the same range")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.title.set_fontsize(10)
    fig.tight_layout()
    return save(fig, out / "size_ranges.png")


def centerness(paper: Path, weights: Path, out: Path, image_size: int) -> Path:
    """The center-ness target of one box on a dense grid, the targets of the demo image at P3, and the
    center-ness a short training run predicts there."""
    import fcos_cli
    from fcos_cli.data import open_split
    from fcos_cli.data.dataset import DetectionDataset
    from fcos_cli.data.transforms import build_transform
    from fcos_cli.targets import assign_targets, make_points

    points = make_points(((60, 100),), (4,))  # one level, a 4-px grid: the target as a field
    box = torch.tensor([[40.0, 40.0, 360.0, 200.0]])
    assigned = assign_targets(points, [box], [torch.zeros(1, dtype=torch.long)], 1, size_ranges=(), radius=0.0)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    im = axes[0].imshow(assigned.centerness[0].view(60, 100).numpy(), extent=(0, 400, 240, 0), cmap="viridis")
    axes[0].add_patch(plt.Rectangle((40, 40), 320, 160, fill=False, ec="white"))
    axes[0].set_title("target sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))", fontsize=9)
    fig.colorbar(im, ax=axes[0], fraction=0.03)

    index = open_split("demo", "train")
    rank = [r.path.stem for r in index.records].index(DEMO_IMAGE)
    image, target, _ = DetectionDataset(index.records[rank:rank + 1], build_transform(image_size, train=False))[0]
    height, width = image.shape[1:]
    rows = [r for r in read_csv(paper / "positives.csv") if r["image"].startswith(DEMO_IMAGE)]
    level = max({r["level"] for r in rows}, key=[r["level"] for r in rows].count)  # its busiest level
    stride = 2 ** int(level)
    grid = torch.full((-(-height // stride), -(-width // stride)), float("nan"))  # negatives: no target, clear
    for r in rows:
        if r["level"] == level:
            grid[int(float(r["y"]) // stride), int(float(r["x"]) // stride)] = float(r["centerness"])
    model, cfg, _ = fcos_cli.load(weights)
    scale = cfg.data.img_size / max(height, width)  # the run's own input size
    small = torch.nn.functional.interpolate(image[None], scale_factor=scale, mode="bilinear")
    with torch.no_grad():
        predicted = model(small).centerness[0][0, 0].sigmoid()  # (H_3, W_3) of the padded small input
    panels = ((axes[1], grid, float(stride), f"{DEMO_IMAGE}, P{level} targets, paper preset (inspect-targets)"),
              (axes[2], predicted, 8 / scale, f"predicted at P3 by a short training run ({cfg.data.img_size} px)"))
    for ax, field, step, title in panels:
        ax.imshow(image.permute(1, 2, 0).numpy(), alpha=0.5, extent=(0, width, height, 0))
        ax.imshow(field.numpy(), cmap="viridis", alpha=0.75, vmin=0, vmax=1,
                  extent=(0, field.shape[1] * step, field.shape[0] * step, 0))
        ax.set(xlim=(0, width), ylim=(height, 0))
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return save(fig, out / "centerness.png")


def background(out: Path) -> Path:
    """Labels of a few points from assign_targets (background = K) and the sigmoid targets they become."""
    from fcos_cli.targets import assign_targets, make_points

    classes = ["ellipse", "rectangle", "triangle"]
    points = make_points(((4, 6),), (32,))
    boxes = torch.tensor([[0.0, 0.0, 80.0, 120.0], [100.0, 10.0, 190.0, 110.0], [130.0, 60.0, 192.0, 128.0]])
    assigned = assign_targets(points, [boxes], [torch.tensor([0, 1, 2])], len(classes), size_ranges=(), radius=0.0)
    labels = assigned.labels[0]
    one_hot = torch.nn.functional.one_hot(labels, len(classes) + 1).float()  # (P, K + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1.2, 1]})
    left.add_patch(plt.Rectangle((0, 0), 192, 128, fill=False, ec="black"))
    for box, name, colour in zip(boxes.tolist(), classes, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        left.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec=colour, lw=2))
        left.text(box[0] + 2, box[1] + 10, name, color=colour, fontsize=8)
    for i, (x, y) in enumerate(points.xy.tolist()):
        left.text(x, y, f"{i}:{int(labels[i])}", ha="center", va="center", fontsize=7,
                  color="0.5" if labels[i] == len(classes) else "black")
    left.set(xlim=(-4, 196), ylim=(132, -4), aspect="equal",
             title=f"assign_targets labels (point:label), background = K = {len(classes)}")
    right.imshow(one_hot.numpy(), cmap="Greys", aspect="auto", vmin=0, vmax=1.6)
    right.axvspan(len(classes) - 0.5, len(classes) + 0.5, color="tab:red", alpha=0.25)
    right.set_xticks(range(len(classes) + 1), [*classes, "background\n(dropped)"], fontsize=8)
    right.set_yticks(range(len(labels)), [str(i) for i in range(len(labels))], fontsize=6)
    right.set(ylabel="point", title="one-hot over K+1, last column dropped: K sigmoid targets")
    for ax in (left, right):
        ax.title.set_fontsize(9)
    fig.tight_layout()
    return save(fig, out / "background.png")


def amp(fp32_run: Path, amp_run: Path, out: Path) -> Path:
    """Why distances stay float32 (bf16 keeps 8 bits), and the losses of the same run with and without --amp."""
    d = torch.arange(1.0, 1024.0, 0.25)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    for dtype, colour in ((torch.bfloat16, "tab:red"), (torch.float16, "tab:blue"), (torch.float32, "tab:green")):
        ulp = torch.finfo(dtype).eps * 2 ** torch.floor(torch.log2(d))  # spacing of representable values near d
        left.step(d, ulp / 2, where="post", color=colour, label=str(dtype).replace("torch.", ""))
    left.set(xscale="log", yscale="log", xlabel="distance (l, t, r or b) in pixels",
             ylabel="largest rounding error (px)", title="A distance stored in 16 bits is rounded")
    left.legend(fontsize=8)
    for run, name in ((fp32_run, "float32"), (amp_run, "--amp (bf16 autocast on this CPU)")):
        rows = read_csv(run / "metrics.csv")
        ap = rows[-1].get("AP", "")
        right.plot([int(r["epoch"]) for r in rows], [float(r["loss"]) for r in rows], marker="o",
                   label=f"{name}: final AP {float(ap):.3f}" if ap else name)
    right.set(xlabel="epoch", ylabel="training loss", title="The same training run, float32 and --amp")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.title.set_fontsize(10)
    fig.tight_layout()
    return save(fig, out / "amp.png")


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (tests): small images, 1 epoch")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the PNGs go (default: docs/)")
    parser.add_argument("--work", type=Path, help="keep the runs here and reuse those already there")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    global DEMO_IMAGE
    inspect_size = "320" if args.quick else "800"
    num_images = "5"  # train_0000 .. train_0004
    if args.quick:  # fewer overlays to draw
        DEMO_IMAGE, num_images = "train_0002", "3"
    tiny = ["--no-pretrained", "--backbone", "test_resnet", "--img-size", "128", "--fpn-channels", "32", "--head-convs", "2",
            "--size-ranges", "32,64,128,256", "--epochs", "1", "--batch-size", "2", "--workers", "0"]
    small = ["--no-pretrained", "--backbone", "regnetx_002", "--img-size", "256", "--fpn-channels", "64", "--head-convs", "2",
             "--size-ranges", "32,64,128,256", "--optimizer", "adamw", "--lr", "0.003", "--warmup-steps", "50",
             "--epochs", "6", "--workers", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work.resolve() if args.work else Path(tmp)
        tmp = str(work)

        def fcos(*argv: str) -> None:  # skip a run whose folder --work already holds
            name = argv[argv.index("--name") + 1] if "--name" in argv else None
            if not (args.work and name and (work / name).is_dir()):
                run_fcos(*argv)

        # The commands docs/fcos.md shows, with --project pointing here.
        fcos("inspect-targets", "--num-images", num_images, "--img-size", inspect_size, "--project", tmp,
             "--name", "improved")
        fcos("inspect-targets", "--num-images", num_images, "--img-size", inspect_size, "--preset", "paper",
             "--project", tmp, "--name", "paper")
        fcos("inspect-targets", "--data", str(DOCS / "data" / "overlap.json"), "--preset", "paper", "--img-size", "320",
             "--num-images", "1", "--project", tmp, "--name", "overlap")
        if args.quick:
            fcos("demo-data", str(work / "demo"), "--num-train", "4", "--num-val", "2")
            data = ["--data", str(work / "demo" / "train.json"), "--val-data", str(work / "demo" / "val.json")]
            settings = [*tiny, *data]
        else:
            settings = small
        fcos("train", *settings, "--project", tmp, "--name", "fp32")
        if not args.quick:  # (bf16 on tiny images is slow; --quick draws the float32 run twice)
            fcos("train", *settings, "--amp", "--project", tmp, "--name", "amp")
        made = [
            points_grid(out),
            save(strip([work / "improved" / f"{DEMO_IMAGE}_P{level}.png" for level in (4, 5, 6)]),
                 out / "inspect_targets_demo.png"),
            rejected_points(work / "improved", out, int(inspect_size)),
            min_area(work / "overlap", out),
            center_sampling(work / "paper", work / "improved", out),
            size_ranges(work / "paper", out),
            centerness(work / "paper", work / "fp32" / "best.safetensors", out, int(inspect_size)),
            background(out),
            save(Image.open(work / "fp32" / "curves.png"), out / "training_curves.png"),
            amp(work / "fp32", work / ("fp32" if args.quick else "amp"), out),
        ]
    for path in made:
        print(f"{path.name:28s} {path.stat().st_size / 1024:6.1f} KB")
    print(f"{len(made)} figures in {time.perf_counter() - start:.0f} s -> {out}")


if __name__ == "__main__":
    main()
