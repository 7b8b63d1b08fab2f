"""The `fcos` command line: parse, validate, call one library function, print. Nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .cli_options import (OneLineErrors, call, console, default_weights, device_option, err_console, fail,
                          given_options, output_file, parse_duration, parse_int_list, parse_size_pair,
                          parse_size_ranges, positive, print_metrics, report_data, run_dir_for, check_run_name, state,
                          valid_if, warn)


app = typer.Typer(help="FCOS object detection on any timm backbone.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, cls=OneLineErrors)


def _version(value: bool) -> None:
    if value:
        console.print(f"fcos_cli {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
) -> None:
    """FCOS object detection on any timm backbone."""
    import time

    state["debug"], state["started"] = debug, time.monotonic()


@app.command("config")
def config_cmd(
    preset: Annotated[str, typer.Option(help="Preset: paper, improved (default) or torchvision.")] = "improved",
) -> None:
    """Print a preset's full configuration as JSON (every field the weights file records)."""
    from .config import preset as make_preset, to_dict

    cfg = call(make_preset, preset)
    console.print_json(json.dumps(to_dict(cfg)))


@app.command("demo-data")
def demo_data_cmd(
    out: Annotated[str, typer.Argument(help="Directory to write images/, train.json and val.json into.")],
    num_train: Annotated[int, typer.Option(help="Training images.", callback=positive("--num-train"))] = 96,
    num_val: Annotated[int, typer.Option(help="Validation images.", callback=positive("--num-val"))] = 24,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same dataset.")] = 0,
) -> None:
    """Write the built-in synthetic demo dataset (shapes of 8 to 800 px) as COCO JSON + JPEG images."""
    from .data.synthetic import write_demo_data

    if Path(out).exists() and not Path(out).is_dir():
        fail(f"{out} is a file; give a folder to write the demo data into")
    path = write_demo_data(out, num_train=num_train, num_val=num_val, seed=seed)
    console.print(f"wrote {num_train} + {num_val} images to {path} (train.json, val.json)")


_RESUME_OPTIONS = {"resume", "device", "workers", "compile", "time"}  # how a run is carried on, not what it computes
# Config fields that the data or the -w weights fill in, or that say how a run is carried on: `--resume auto`
# does not compare them with the options.
_NOT_COMPARED = {"model.num_classes", "model.pixel_mean", "model.pixel_std", "model.channel_order",
                 "model.stride_in_1x1", "train.workers", "train.compile", "train.time_limit"}


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="COCO .json, YOLO data.yaml, or 'demo' (built in, generated offline).")] = "demo",
    backbone: Annotated[Optional[str], typer.Option(help="Any timm model; see `fcos backbones` "
                                                    "[default: resnet50, or the --weights' backbone].")] = None,
    preset: Annotated[str, typer.Option(help="paper, improved or torchvision (with --weights: the weights' model, "
                                        "targets and loss unless given).")] = "improved",
    epochs: Annotated[int, typer.Option(help="Training epochs.", callback=positive("--epochs"))] = 12,
    batch_size: Annotated[int, typer.Option(help="Images per step.", callback=positive("--batch-size"))] = 8,
    img_size: Annotated[int, typer.Option(help="Longest image side in pixels (with --weights: the weights').",
                                        callback=positive("--img-size"))] = 640,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate [default: 0.01 sgd, 0.001 adamw].",
                                                callback=positive("--lr"))] = None,
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = "sgd",
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps (at most a third of training).",
                                              callback=valid_if(lambda v: v >= 0, "0 or more"))] = 500,
    schedule: Annotated[str, typer.Option(help="cosine, or step (x0.1 at 2/3 and 8/9 of training).")] = "cosine",
    grad_clip: Annotated[float, typer.Option(help="Max gradient norm; 0 turns clipping off.",
                                             callback=valid_if(lambda v: v >= 0, "0 or more"))] = 10.0,
    multi_scale: Annotated[Optional[str], typer.Option(help="Training sizes picked per image, e.g. 288,320,352.")] = None,
    eval_interval: Annotated[int, typer.Option(help="Validate every N epochs (and after the last).",
                                               callback=positive("--eval-interval"))] = 1,
    fpn_channels: Annotated[int, typer.Option(help="FPN and head width (with --weights: the weights').",
                                            callback=positive("--fpn-channels"))] = 256,
    head_convs: Annotated[int, typer.Option(help="Convs per head tower (with --weights: the weights').",
                                            callback=valid_if(lambda v: v >= 1, "at least 1"))] = 4,
    size_ranges: Annotated[Optional[str], typer.Option(help="Level size boundaries m_1..m_4 [default: "
                                                       "64,128,256,512].")] = None,
    val_data: Annotated[Optional[str], typer.Option(help="Validation data [default: the data's val split].")] = None,
    val_fraction: Annotated[float, typer.Option(help="Hold out this fraction of a single COCO file.",
                                                callback=valid_if(lambda v: 0 <= v < 1, "a fraction in [0, 1)"))] = 0.0,
    images: Annotated[Optional[str], typer.Option(help="Image folder of a COCO file [default: beside it].")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", callback=device_option)] = "auto",
    amp: Annotated[bool, typer.Option(help="Mixed precision: bf16 on CPU, fp16 on CUDA.")] = False,
    ema: Annotated[bool, typer.Option(help="Keep an EMA of the weights and evaluate/save it.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (the first steps are slow).")
                       ] = False,
    weights: Annotated[Optional[Path], typer.Option("--weights", "-w", help="Start from these fcos_cli weights "
                                                   "(fine-tuning; other classes are fine).", exists=True, dir_okay=False)] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a run from its last.safetensors; auto: continue "
                                                 "PROJECT/NAME if it has one (these options must be its own), "
                                                 "else start it.")] = None,
    time: Annotated[Optional[str], typer.Option("--time", help="Time budget: stop at a step boundary before it "
                                                "runs out, save and print the --resume line (2h, 90m, 45s, 1h30m; "
                                                "a plain number is minutes).")] = None,
    pretrained_file: Annotated[Optional[Path], typer.Option(help="Local backbone weights (timm names).",
                                                            exists=True, dir_okay=False)] = None,
    freeze_stages: Annotated[Optional[int], typer.Option(help="Freeze the backbone's stem (0) and first N stages.",
                                                         min=0)] = None,
    freeze_bn: Annotated[bool, typer.Option(help="Backbone BatchNorm in eval mode with frozen affine.")] = False,
    backbone_lr_mult: Annotated[float, typer.Option(help="Backbone learning rate = lr x this.",
                                                    callback=positive("--backbone-lr-mult"))] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    workers: Annotated[int, typer.Option(help="Data-loading worker processes (0: load in the main process).",
                                         callback=valid_if(lambda v: v >= 0, "0 or more"))] = 2,
    project: Annotated[str, typer.Option(help="Parent folder of runs.")] = "runs/train",
    name: Annotated[str, typer.Option(help="Run name (numbered exp, exp2, ... when taken).")] = "exp",
    exist_ok: Annotated[bool, typer.Option(help="Reuse an existing run folder.")] = False,
) -> None:
    """Train an FCOS detector; writes last/best.safetensors, metrics.csv and curves.png under PROJECT/NAME."""
    from . import checkpoint
    from .config import preset as make_preset
    from .data import open_data
    from .engine.common import resolve_device
    from .engine.distributed import close_distributed, init_distributed
    from .engine.stop import TIME_LIMIT, TrainingInterrupted
    from .engine.train import finetune_model, train
    from .model.backbone import check_backbone_name

    given = given_options(ctx)
    time_limit = parse_duration(time, "--time") if time is not None else None
    auto = resume == "auto"
    if resume and not auto:  # everything comes from the run's own config
        if not Path(resume).is_file():
            raise typer.BadParameter(f"{resume} is not a file (give a run's last.safetensors, or auto)",
                                     param_hint="--resume")
        ignored = [flag for name, flag in given.items() if name not in _RESUME_OPTIONS]
        if ignored:
            raise typer.BadParameter(f"a resumed run keeps its own config; drop {', '.join(ignored)} (only "
                                     f"--device, --workers, --compile and --time may change)", param_hint="--resume")
    dev = call(resolve_device, device)
    ranks, dev = call(init_distributed, dev)  # under torchrun: this process's rank and device
    if not ranks.is_main:  # rank 0 speaks for all
        console.quiet = err_console.quiet = True
    model = None
    if resume and not auto:
        cfg = call(checkpoint.read_metadata, resume)[0]
        run_dir = Path(resume).parent
    else:
        cfg = call(make_preset, preset)
        if optimizer not in ("sgd", "adamw"):
            raise typer.BadParameter("expected sgd or adamw", param_hint="--optimizer")
        if schedule not in ("cosine", "step"):
            raise typer.BadParameter("expected cosine or step", param_hint="--schedule")
        # Fine-tuning: the weights' model, targets, loss, postprocessing and image size, unless given here.
        source = call(checkpoint.read_metadata, weights)[0] if weights else None
        if source is not None and "preset" not in given:
            cfg.model, cfg.targets, cfg.loss, cfg.post, cfg.preset = (source.model, source.targets, source.loss,
                                                                       source.post, source.preset)
        m, t, d = cfg.model, cfg.train, cfg.data
        if source is not None and backbone is None:
            backbone = source.model.backbone.name
        m.backbone.name = backbone or "resnet50"
        call(check_backbone_name, m.backbone.name)  # before any data is read or run folder made
        m.backbone.pretrained_file = str(pretrained_file) if pretrained_file else None
        m.backbone.freeze_stages = -1 if freeze_stages is None else freeze_stages
        m.backbone.freeze_bn, m.backbone.lr_mult = freeze_bn, backbone_lr_mult
        if source is None or "fpn_channels" in given:
            m.fpn.out_channels = fpn_channels
            m.head.num_groups = min(m.head.num_groups, max(fpn_channels // 2, 1))  # GroupNorm: 2+ values at 1x1
        if source is None or "head_convs" in given:
            m.head.num_convs = head_convs
        if size_ranges:
            cfg.targets.size_ranges = parse_size_ranges(size_ranges, len(cfg.model.fpn.levels))
        t.epochs, t.batch_size, t.optimizer, t.seed, t.workers = epochs, batch_size, optimizer, seed, workers
        t.amp, t.ema, t.warmup_steps, t.schedule, t.grad_clip = amp, ema, warmup_steps, schedule, grad_clip
        t.eval_interval, t.compile = eval_interval, compile
        if multi_scale:
            d.multi_scale = parse_int_list(multi_scale, "--multi-scale")
        t.lr = lr if lr is not None else (0.01 if optimizer == "sgd" else 0.001)
        d.train, d.val, d.val_fraction, d.images = data, val_data, val_fraction, images
        d.img_size = source.data.img_size if source is not None and "img_size" not in given else img_size
        run_dir = None
        if auto:  # the same command again (a requeued job): continue PROJECT/NAME itself, else start it
            resume = _own_last(Path(project) / check_run_name(name, project), cfg)
            cfg = call(checkpoint.read_metadata, resume)[0] if resume else cfg
            run_dir = Path(resume).parent if resume else run_dir_for(project, name, exist_ok=True)
    if resume:
        cfg.train.compile = compile
        if "workers" in given:
            cfg.train.workers = workers
    with ranks.main_first():  # rank 0 writes the demo cache before the others read it
        train_index, val_index = call(open_data, cfg.data.train, cfg.data.val, cfg.data.val_fraction,
                                      cfg.train.seed, cfg.data.images)
    report_data(train_index, val_index)
    if weights and not resume:
        model, report = call(finetune_model, Path(weights), cfg, train_index.class_names)
        for line in report:
            console.print(line)
    elif not resume and (pretrained_file or freeze_stages is not None or freeze_bn):
        import torch

        from .model import build_model

        torch.manual_seed(cfg.train.seed)
        cfg.model.num_classes = len(train_index.class_names)
        model = call(build_model, cfg.model)  # built here to report what loaded and what is frozen
    if model is not None:
        report = model.backbone.load_report
        for line in [*(report.lines() if report else []), *(f"frozen: {f}" for f in model.backbone.frozen)]:
            console.print(line, highlight=False)
    run_dir = run_dir or ranks.share(run_dir_for(project, name, exist_ok) if ranks.is_main else None)
    console.print(f"training on {len(train_index.records)} images ({', '.join(train_index.class_names)}), "
                  f"validating on {len(val_index.records) if val_index else 0}, device {dev}, run {run_dir}")
    if time_limit is not None:  # the command's budget (a resumed run gets a new one), less its start-up so far
        import time as clock

        time_limit = max(time_limit - (clock.monotonic() - state["started"]), 1e-3)
    cfg.train.time_limit = time_limit
    try:
        result = call(train, cfg, train_index, val_index, run_dir, dev, model=model, console=console,
                      resume=Path(resume) if resume else None, ranks=ranks)
    except TrainingInterrupted as stop:
        err_console.print(f"[yellow]{stop}[/yellow]; continue with: fcos train --resume {stop.last}",
                          highlight=False, soft_wrap=True)
        # A signal's usual code (130 SIGINT, 143 SIGTERM); 124 for the time budget, as GNU `timeout`.
        raise typer.Exit(124 if stop.cause == TIME_LIMIT else 128 + stop.cause) from None
    finally:
        close_distributed()
    if result.skipped_steps:
        err_console.print(f"[yellow]warning:[/yellow] {result.skipped_steps} steps skipped without an update "
                          f"(non-finite loss or gradients)", highlight=False)
    print_metrics(result.final)
    console.print(f"{result.seconds:.0f} s; weights: {result.best} (best AP {max(result.best_ap, 0):.3f}), {result.last}")


def _own_last(run_dir: Path, cfg) -> str | None:
    """`--resume auto`: RUN_DIR/last.safetensors if there is one, else None. The options must make the run's own
    config (a changed job script is an error, not silently ignored)."""
    from . import checkpoint
    from .config import to_dict

    last = run_dir / "last.safetensors"
    if not last.is_file():
        return None

    def flat(tree: dict, prefix: str = "") -> dict:
        return {key: value for k, v in tree.items()
                for key, value in (flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v}).items()}

    ours, theirs = (flat(json.loads(json.dumps(to_dict(c)))) for c in (cfg, call(checkpoint.read_metadata, last)[0]))
    differ = [f"{k} {ours.get(k)} (the run's: {theirs.get(k)})" for k in sorted(ours.keys() | theirs.keys())
              if k not in _NOT_COMPARED and ours.get(k) != theirs.get(k)]
    if differ:
        fail(f"--resume auto: {run_dir} was started with other options: {'; '.join(differ[:4])}"
             f"{' ...' if len(differ) > 4 else ''}; give its options, or another --name")
    return str(last)


@app.command("backbones")
def backbones_cmd(
    pattern: Annotated[Optional[str], typer.Argument(help="timm name pattern, e.g. 'convnext*'; a plain word "
                                                     "matches anywhere in the name (default: all models).")] = None,
    limit: Annotated[int, typer.Option(help="Probe at most this many matching models (0.1-0.3 s each: built and "
                                           "run on the meta device, no weights); 0 probes them all.", min=0)] = 30,
    all_models: Annotated[bool, typer.Option("--all", help="Also list the models that cannot work, and why.")
                          ] = False,
    check: Annotated[Optional[str], typer.Option(help="Build FCOS on this timm model and run one forward on a "
                                                 "dummy image, printing the shapes per level.")] = None,
    img_size: Annotated[str, typer.Option(help="H,W of the --check image (padded to a multiple of 32).")] = "320,480",
) -> None:
    """List timm backbones that work with FCOS (strides, channels, simple pyramid or not), or --check one."""
    import time

    import timm
    from rich.markup import escape
    from rich.table import Table

    from .model.backbone import check_backbone, probe_backbone, suggest_backbones

    if check:
        size = parse_size_pair(img_size, "--img-size")
        if not timm.is_model(check):
            close = suggest_backbones(check)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise typer.BadParameter(f"unknown timm model {check!r}{hint}", param_hint="--check")
        rows = call(check_backbone, check, size)
        table = Table("part", "stride", "shape (B, C, H, W)", title=f"{check} on a {size[0]}x{size[1]} image")
        for part, stride, shape in rows:
            table.add_row(part, str(stride), str(shape))
        console.print(table)
        pyramid = any(part == "pyramid" for part, _, _ in rows)
        console.print(f"ok: {check} works with FCOS{' through the simple feature pyramid' if pyramid else ''}")
        return
    query = pattern if pattern is None or any(c in pattern for c in "*?[") else f"*{pattern}*"
    names = timm.list_models(query) if query else timm.list_models()
    if not names:
        fail(f"no timm model matches {pattern!r}")
    probed = names[:limit] if limit else names
    start = time.perf_counter()
    probes = [probe_backbone(name) for name in probed]
    table = Table(title=f"timm backbones matching {query or '*'}")
    table.add_column("model", no_wrap=True)  # full names: they are what --backbone takes
    for column in ("timm strides", "channels", "layout", "C3-C5 from"):
        table.add_column(column, overflow="fold")
    for p in probes:
        if p.error is None:
            table.add_row(p.name, ",".join(map(str, p.reductions)), ",".join(map(str, p.channels)),
                          "NHWC" if p.nhwc else "NCHW", "simple pyramid" if p.pyramid else "timm levels")
        elif all_models:
            table.add_row(p.name, "-", "-", "-", f"[red]no:[/red] {escape(p.error[:70])}")
    console.print(table)
    failing = [p for p in probes if p.error is not None]
    console.print(f"{len(probes) - len(failing)} of {len(probes)} probed work"
                  f"{f' ({len(failing)} cannot: --all shows why)' if failing and not all_models else ''}; "
                  f"{time.perf_counter() - start:.1f} s", highlight=False)
    if len(probed) < len(names):
        console.print(f"probed the first {len(probed)} of {len(names)} matches: narrow PATTERN or pass --limit 0",
                      highlight=False)


@app.command("eval")
def eval_cmd(
    weights: Annotated[Optional[Path], typer.Option("--weights", "-w", help="Weights file [default: newest "
                                                   "runs/train/*/best.safetensors].", exists=True, dir_okay=False)] = None,
    data: Annotated[str, typer.Option(help="COCO .json, YOLO data.yaml, or 'demo' (its val split).")] = "demo",
    images: Annotated[Optional[str], typer.Option(help="Image folder of a COCO file (default: beside it).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", callback=positive("--batch-size"))] = 8,
    img_size: Annotated[Optional[int], typer.Option(help="Longest side [default: the weights' training size].",
                                                    callback=positive("--img-size"))] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", callback=device_option)] = "auto",
    half: Annotated[bool, typer.Option(help="Half precision: fp16 on CUDA, bf16 on CPU.")] = False,
    fp32: Annotated[bool, typer.Option("--fp32", help="Float32 throughout (default on a CPU with bf16: bf16 "
                                       "network, float32 decoding and NMS).")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (slow first batch).")] = False,
    project: Annotated[str, typer.Option(help="Parent folder of eval outputs.")] = "runs/eval",
    name: Annotated[str, typer.Option(help="Output folder name (numbered when taken).")] = "exp",
) -> None:
    """COCO mAP of a weights file on a dataset; writes results.json, metrics.json and pr_curve.png."""
    from . import checkpoint
    from .data import open_split
    from .engine.common import resolve_device
    from .engine.evaluate import evaluate
    from .engine.predict import inference_amp
    from .model.optimize import optimize_for_inference

    if half and fp32:
        fail("--half and --fp32 contradict each other: give one")
    path = Path(weights) if weights else call(default_weights)
    console.print(f"weights: {path}")
    dev = call(resolve_device, device)
    model, cfg, class_names = call(checkpoint.load, path, dev)
    index = call(open_split, data, "val", images)
    report_data(index)
    if index.class_names != class_names:
        fail(f"the data's classes {index.class_names} differ from the weights' classes {class_names}")
    if img_size:
        cfg.data.img_size = img_size
    out = run_dir_for(project, name)
    amp = inference_amp(dev, half, fp32)
    precision = ("fp16 autocast" if dev.type == "cuda" else "bf16 autocast") if amp else "float32"
    console.print(f"precision: {precision}", highlight=False)
    fast = optimize_for_inference(model, compile=compile)  # a copy: folded BatchNorm, channels_last
    result = call(evaluate, fast, cfg, index, dev, batch_size=batch_size, amp=amp, out_dir=out)
    print_metrics(result)
    console.print(f"wrote {out}/results.json, metrics.json, pr_curve.png")


@app.command("predict")
def predict_cmd(
    source: Annotated[str, typer.Argument(help="An image, a folder (searched recursively) or a glob.")],
    weights: Annotated[Optional[Path], typer.Option("--weights", "-w", help="Weights file, or an ONNX file from "
                                                   "`fcos export` [default: newest runs/train/*/best.safetensors].",
                                                   exists=True, dir_okay=False)] = None,
    conf: Annotated[float, typer.Option(help="Lowest score drawn and written.", min=0.0, max=1.0)] = 0.25,
    iou: Annotated[Optional[float], typer.Option(help="NMS IoU threshold [default: the weights' config].",
                                                 min=0.0, max=1.0)] = None,
    max_det: Annotated[Optional[int], typer.Option(help="Detections per image [default: the weights' config].",
                                                   callback=positive("--max-det"))] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Longest side [default: the weights' training size].",
                                                    callback=positive("--img-size"))] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", callback=positive("--batch-size"))] = 8,
    half: Annotated[bool, typer.Option(help="Half precision: fp16 on CUDA, bf16 on CPU.")] = False,
    fp32: Annotated[bool, typer.Option("--fp32", help="Float32 throughout (default on a CPU with bf16: bf16 "
                                       "network, float32 decoding and NMS).")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (slow first batch).")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", callback=device_option)] = "auto",
    save_images: Annotated[bool, typer.Option(help="Write annotated images.")] = True,
    project: Annotated[str, typer.Option(help="Parent folder of prediction runs.")] = "runs/predict",
    name: Annotated[str, typer.Option(help="Output folder name (numbered when taken).")] = "exp",
) -> None:
    """Detect objects in images: annotated PNGs and predictions.json (COCO results, original pixels)."""
    from rich.progress import Progress
    from rich.table import Table

    from functools import partial

    from . import checkpoint
    from .engine.common import resolve_device
    from .engine.predict import collect_images, inference_amp, onnx_predict, predict, predict_files
    from .model.optimize import optimize_for_inference

    path = Path(weights) if weights else call(default_weights)
    files, others = call(collect_images, source)
    if path.suffix == ".onnx":  # NMS settings and size are baked into the exported graph
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf raises several types for a file that is not ONNX
            fail(f"--weights {path} is not a readable ONNX file ({type(e).__name__}); write one with `fcos export`")
        metadata = {p.key: p.value for p in proto.metadata_props}
        class_names = json.loads(metadata.get("fcos_cli.class_names", "[]"))
        category_ids = json.loads(metadata.get("fcos_cli.category_ids", "null"))
        detect = partial(onnx_predict, path)
    else:
        dev = call(resolve_device, device)
        model, cfg, class_names = call(checkpoint.load, path, dev)
        metadata = call(checkpoint.read_metadata, path)[2]
        category_ids = json.loads(metadata.get("fcos_cli.category_ids", "null"))
        cfg.post.nms_iou = cfg.post.nms_iou if iou is None else iou
        cfg.post.max_detections = max_det or cfg.post.max_detections
        cfg.data.img_size = img_size or cfg.data.img_size
        if half and fp32:
            fail("--half and --fp32 contradict each other: give one")
        fast = optimize_for_inference(model, compile=compile)  # a copy: folded BatchNorm, channels_last
        detect = partial(predict, fast, cfg, batch_size=batch_size, amp=inference_amp(dev, half, fp32))
    category_ids = category_ids or list(range(1, len(class_names) + 1))
    out = run_dir_for(project, name)
    console.print(f"weights: {path}; {len(files)} images -> {out}")
    for other in others:
        warn(f"skipped {other}: not an image file")
    with Progress(console=console) as bar:
        task = bar.add_task("predict", total=len(files))
        run = call(predict_files, detect, class_names, files, out, category_ids, conf, batch_size, save_images,
                   lambda n: bar.advance(task, n))
    for file, why in run.skipped:
        warn(f"skipped {file}: {why}")
    table = Table("class", "detections", title=f"Detections with score >= {conf}")
    for cls in class_names:
        table.add_row(cls, str(run.per_class.get(cls, 0)))
    console.print(table)
    skipped = len(run.skipped) + len(others)
    console.print(f"{run.num_images} images in {run.seconds:.1f} s ({run.num_images / max(run.seconds, 1e-9):.1f} "
                  f"images/s){f', {skipped} files skipped' if skipped else ''}; wrote {out}/predictions.json")


@app.command("inspect-targets")
def inspect_targets_cmd(
    data: Annotated[str, typer.Option(help="COCO .json, YOLO data.yaml, or 'demo'.")] = "demo",
    preset: Annotated[str, typer.Option(help="paper, improved or torchvision (ignored with --weights).")] = "improved",
    weights: Annotated[Optional[Path], typer.Option("--weights", "-w", help="Take the settings of these weights.",
                                                    exists=True, dir_okay=False)] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Longest side [default: the weights' size, else 800].",
                                                    callback=positive("--img-size"))] = None,
    size_ranges: Annotated[Optional[str], typer.Option(help="Level boundaries m_1..m_4, e.g. 64,128,256,512.")] = None,
    center_sampling_radius: Annotated[Optional[float], typer.Option(help="In strides; 0 turns it off.", min=0.0)] = None,
    num_images: Annotated[int, typer.Option(help="Images to explain.", callback=positive("--num-images"))] = 4,
    split: Annotated[str, typer.Option(help="Split of the data: train or val.",
                                       callback=valid_if(lambda v: v in ("train", "val"), "train or val"))] = "train",
    draw: Annotated[bool, typer.Option(help="Write one overlay PNG per image and level.")] = True,
    project: Annotated[str, typer.Option(help="Parent folder of inspections.")] = "runs/inspect",
    name: Annotated[str, typer.Option(help="Output folder name (numbered when taken).")] = "exp",
) -> None:
    """Show which point learns which box, at which level, and why the others do not (no training needed)."""
    from rich.table import Table

    from . import checkpoint
    from .config import preset as make_preset
    from .data import open_split
    from .inspect_targets import inspect_dataset

    if weights:
        cfg = call(checkpoint.read_metadata, weights)[0]
    else:
        cfg = call(make_preset, preset)
        cfg.data.img_size = 800
    cfg.data.img_size = img_size or cfg.data.img_size
    if size_ranges:
        cfg.targets.size_ranges = parse_size_ranges(size_ranges, len(cfg.model.fpn.levels))
    if center_sampling_radius is not None:
        cfg.targets.center_sampling_radius = center_sampling_radius
    index = call(open_split, data, split)
    report_data(index)
    cfg.model.num_classes = len(index.class_names)
    out = run_dir_for(project, name)
    stats = call(inspect_dataset, index, cfg, num_images, out, draw)
    table = Table("", *stats, title=f"Target assignment on {min(num_images, len(index.records))} images "
                  f"(img-size {cfg.data.img_size}, ranges {list(cfg.targets.size_ranges)}, "
                  f"radius {cfg.targets.center_sampling_radius})")
    rows = [("best possible recall", lambda s: f"{s['bpr']:.3f}"), ("boxes", lambda s: str(s["boxes"])),
            ("boxes without positives", lambda s: str(s["boxes_without_positives"])),
            ("positive points", lambda s: str(s["positives"])),
            ("ambiguous / positive", lambda s: f"{s['ambiguous_ratio']:.3f}")]
    rows += [(f"positives {lvl}", lambda s, lvl=lvl: str(s["positives_per_level"][lvl]))
             for lvl in stats["chosen"]["positives_per_level"]]
    rows += [(f"boxes {lvl}", lambda s, lvl=lvl: str(s["boxes_per_level"][lvl]))
             for lvl in stats["chosen"]["boxes_per_level"]]
    for label, cell in rows:
        table.add_row(label, *(cell(s) for s in stats.values()))
    console.print(table)
    console.print(f"wrote {out}: assignments.json, positives/boxes/rejected.csv, stats.json"
                  f"{', one overlay PNG per image and level' if draw else ''}")


@app.command("import-weights")
def import_weights_cmd(
    source: Annotated[Path, typer.Argument(help="A .pth checkpoint of a COCO-trained FCOS (state dict, or one "
                                           "under 'state_dict'/'model').", exists=True, dir_okay=False)],
    from_: Annotated[str, typer.Option("--from", help="Who trained it: torchvision, mmdet or fcos-original "
                                       "(tianzhi0549/FCOS).")],
    output: Annotated[Optional[Path], typer.Option(help="Output weights (default: SOURCE with the suffix .safetensors).")] = None,
    variant: Annotated[str, typer.Option(help="mmdet / fcos-original: paper, or improved (imprv / 'tricks': "
                                         "center-ness on the regression tower, normalised boxes). auto reads the "
                                         "mmdet config in the file, else the file name, else paper.")] = "auto",
    allow_partial: Annotated[bool, typer.Option(help="Write even with source tensors left over or tensors of ours "
                                                "unfilled (those keep their random init).")] = False,
) -> None:
    """Convert a COCO-trained FCOS (torchvision, mmdetection, original FCOS) into fcos_cli weights for predict/eval."""
    from .import_weights import SOURCES, VARIANTS, import_weights

    if from_ not in SOURCES:
        raise typer.BadParameter(f"expected one of {', '.join(SOURCES)}", param_hint="--from")
    if variant not in VARIANTS:
        raise typer.BadParameter(f"expected one of {', '.join(VARIANTS)}", param_hint="--variant")
    report = call(import_weights, source, from_, output, variant, allow_partial)
    for src, ours, shape in report.used:
        console.print(f"  used      {src} -> {ours} {list(shape)}", highlight=False, soft_wrap=True)
    for ours, why in report.filled:
        console.print(f"  filled    {ours}: {why}", highlight=False, soft_wrap=True)
    for src in report.left_over:
        console.print(f"  [red]left over[/red] {src}", highlight=False, soft_wrap=True)
    for ours in report.unfilled:
        console.print(f"  [red]unfilled[/red]  {ours}", highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"  note: {note}", highlight=False, soft_wrap=True)
    console.print(f"{len(report.used)} tensors used, {len(report.filled)} filled with exact constants, "
                  f"{len(report.left_over)} left over, {len(report.unfilled)} unfilled; backbone {report.backbone}, "
                  f"preset {report.variant} ({report.variant_reason}), {len(report.class_names)} classes", highlight=False,
                  soft_wrap=True)
    if report.written is None:
        fail(f"{source}: {len(report.left_over)} source tensors left over and {len(report.unfilled)} of ours unfilled "
              f"(listed above); nothing written (--allow-partial writes it anyway)")
    console.print(f"wrote {report.written}; try: fcos predict IMAGES -w {report.written}", highlight=False,
                  soft_wrap=True)


@app.command("export")
def export_cmd(
    weights: Annotated[Optional[Path], typer.Option("--weights", "-w", help="Weights file [default: newest "
                                                    "runs/train/*/best.safetensors].", exists=True, dir_okay=False)] = None,
    format: Annotated[str, typer.Option("--format", help="onnx (postprocess inside) or safetensors.")] = "onnx",
    output: Annotated[Optional[Path], typer.Option(help="Output file [default: beside the weights].")] = None,
    half: Annotated[bool, typer.Option(help="safetensors: store fp16 weights.")] = False,
    img_size: Annotated[Optional[int], typer.Option(help="Sample size for the export check [default: the weights'].",
                                                    callback=positive("--img-size"))] = None,
) -> None:
    """Export a detector: ONNX with NMS inside (checked against PyTorch with onnxruntime), or fp16 safetensors."""
    import torch

    from . import checkpoint

    if format not in ("onnx", "safetensors"):
        raise typer.BadParameter("expected onnx or safetensors", param_hint="--format")
    path = weights or call(default_weights)
    model, cfg, class_names = call(checkpoint.load, path)
    if format == "safetensors":
        out = (output_file(output) if output
               else path.with_name(path.stem + (".fp16" if half else ".export") + ".safetensors"))
        checkpoint.save(out, model.half() if half else model, cfg, class_names)
        console.print(f"wrote {out}")
        return
    from .export import compare_onnx, export_onnx

    out = output_file(output) if output else path.with_suffix(".onnx")
    size = img_size or cfg.data.img_size
    torch.manual_seed(0)
    ids = call(checkpoint.read_metadata, path)[2].get("fcos_cli.category_ids")
    call(export_onnx, model, cfg, class_names, out, torch.rand(1, 3, size, size),
         extra={"fcos_cli.category_ids": ids} if ids else None)
    check = compare_onnx(out, model, cfg, torch.rand(1, 3, size * 3 // 4, size))  # another size than the export
    console.print(f"wrote {out}; onnxruntime vs PyTorch on a {size * 3 // 4}x{size} input: "
                  f"{check['detections']:.0f} detections, max box difference {check['box']:.2e} px, "
                  f"max score difference {check['score']:.2e}")
