"""The `fcos` command line: parse, validate, call one library function, print. Nothing else."""

from __future__ import annotations

import json
import time
import typing
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from .cli_options import (
    OneLineErrors,
    check_run_name,
    class_list_option,
    console,
    counted,
    default_weights,
    describe_size,
    device_option,
    err_console,
    fail,
    given_options,
    numbers_option,
    output_file,
    parse_class_list,
    parse_duration,
    parse_size_pair,
    parse_size_ranges,
    positive,
    print_metrics,
    report_data,
    resolve_weights,
    run_dir_for,
    set_input_size,
    state,
    train_progress,
    valid_if,
    warn,
    weights_option,
)
from .config import SIZES, Preset, TrainConfig, set_value
from .data import DATA_HELP
from .version import __version__
from .zoo import is_detector_name

_CHOICES = typing.get_type_hints(TrainConfig)
OptimizerName, ScheduleName = _CHOICES["optimizer"], _CHOICES["schedule"]
SizeName = Literal[tuple(SIZES)]  # type: ignore[valid-type]
PresetName = Preset


DATA_OPTION_HELP = DATA_HELP[0].upper() + DATA_HELP[1:]  # the formats of fcos_cli.data.FORMATS
WEIGHTS_HELP = ("Weights file or a published detector (`fcos weights`) \\[default: newest "
                "runs/train/*/best.safetensors].")

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
    state["debug"], state["started"] = debug, time.monotonic()


@app.command("config")
def config_cmd(
    preset: Annotated[PresetName, typer.Option(help="FCOS variant.")] = "improved",
    size: Annotated[Optional[SizeName], typer.Option(help="Apply a size profile (what `fcos train --size` sets).",
                                                     show_default=False)] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Print the config stored in these weights "
                                                   "instead (where the backbone started, the recipe, ...).",
                                                   callback=weights_option)] = None,
) -> None:
    """Print a full config as JSON: a starting file for `fcos train --config` (null fields follow their rule), or
    the config a weights file records."""
    from .config import apply_size, to_dict
    from .config import preset as make_preset

    if weights:
        from .checkpoint import read_info

        cfg = read_info(resolve_weights(weights)).config
    else:
        cfg = make_preset(preset)
        if size:
            apply_size(cfg, size)
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


# How a run is carried on, not what it computes:
_RESUME_OPTIONS = {"resume", "device", "workers", "compile", "grad_checkpoint", "time"}
# Config fields that the data or the -w weights fill in, or that say how a run is carried on: `--resume auto`
# does not compare them with the options.
_NOT_COMPARED = {"model.num_classes", "model.pixel_mean", "model.pixel_std", "model.channel_order",
                 "model.stride_in_1x1", "train.workers", "train.compile", "train.grad_checkpoint",
                 "train.time_limit"}
DATA, MODEL, OPTIM, OUTPUT, HARDWARE = "Data", "Model", "Optimisation", "Output", "Hardware"


def _default(key: str) -> str:
    """A config field's default as `--help` shows it (defaults live in config.py only)."""
    from .config import FCOSConfig

    value = FCOSConfig()
    for part in key.split("."):
        value = getattr(value, part)
    return "auto" if value is None else ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _opt(key: str, help: str, panel: str, *decls: str, auto: str = "", **kwargs):
    """An option that sets config field `key` when given; its help shows the field's default."""
    flag = kwargs.pop("flag", False)  # a plain on-switch: its off default goes without saying
    text = help if flag else f"{help} \\[default: {auto or _default(key)}]"
    return typer.Option(*decls, help=text, show_default=False, rich_help_panel=panel,
                        metavar="" if flag or decls and "/" in decls[0] else None, **kwargs)


# Option name -> config key: a given option sets that field, after --size, --weights, --config and --set.
TRAIN_FLAGS = {
    "data": "data.train", "val_data": "data.val", "val_fraction": "data.val_fraction", "images": "data.images",
    "img_size": "data.img_size", "max_size": "data.max_size", "multi_scale": "data.multi_scale", "backbone": "model.backbone.name",
    "pretrained": "model.backbone.pretrained", "pretrained_file": "model.backbone.pretrained_file",
    "freeze_stages": "model.backbone.freeze_stages", "freeze_bn": "model.backbone.freeze_bn",
    "backbone_lr_mult": "model.backbone.lr_mult", "fpn_channels": "model.fpn.out_channels",
    "head_convs": "model.head.num_convs", "size_ranges": "targets.size_ranges",
    "center_sampling_radius": "targets.center_sampling_radius", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "lr": "train.lr", "optimizer": "train.optimizer",
    "warmup_steps": "train.warmup_steps", "schedule": "train.schedule", "grad_clip": "train.grad_clip",
    "eval_interval": "train.eval_interval", "amp": "train.amp", "ema": "train.ema", "compile": "train.compile",
    "grad_checkpoint": "train.grad_checkpoint",
    "seed": "train.seed", "workers": "train.workers",
}


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    data: Annotated[Optional[str], _opt("data.train", f"{DATA_OPTION_HELP}.", DATA)] = None,
    val_data: Annotated[Optional[str], _opt("data.val", "Validation data.", DATA, auto="the data's val split")] = None,
    val_fraction: Annotated[Optional[float], _opt("data.val_fraction", "Hold out this fraction of a single COCO file.",
                                                  DATA, callback=valid_if(lambda v: 0 <= v < 1, "a fraction in [0, 1)"))
                            ] = None,
    images: Annotated[Optional[str], _opt("data.images", "Image folder of a COCO file.", DATA, auto="beside it")] = None,
    img_size: Annotated[Optional[int], _opt("data.img_size", "Longest image side in pixels, or the short side with "
                                            "--max-size.", DATA, callback=positive("--img-size"))] = None,
    max_size: Annotated[Optional[int], _opt("data.max_size", "Cap on the long side; makes --img-size the short side "
                                            "(COCO: --img-size 800 --max-size 1333).", DATA, auto="none",
                                            callback=positive("--max-size"))] = None,
    multi_scale: Annotated[Optional[str], _opt("data.multi_scale", "Training sizes picked per image, e.g. 288,320.",
                                               DATA, auto="none", callback=numbers_option())] = None,
    size: Annotated[Optional[SizeName], typer.Option(help="Size profile: backbone, widths, image size and recipe "
                                                     "together; n for CPUs ... l the paper's R-50 (`fcos config --size "
                                                     "s` shows one) \\[default: n on the demo data, else m].",
                                                     show_default=False, rich_help_panel=MODEL)] = None,
    preset: Annotated[Optional[PresetName], typer.Option(help="FCOS variant \\[default: improved].",
                                                         show_default=False, rich_help_panel=MODEL)] = None,
    backbone: Annotated[Optional[str], _opt("model.backbone.name", "Any timm model (NAME.TAG picks pretrained "
                                            "weights); see `fcos backbones`.", MODEL)] = None,
    pretrained: Annotated[Optional[bool], _opt("model.backbone.pretrained", "Start the backbone from timm's "
                                               "pretrained weights (downloaded once into the Hugging Face cache).",
                                               MODEL, "--pretrained/--no-pretrained", auto="yes, except on the "
                                               "built-in demo data, which trains from scratch offline")] = None,
    pretrained_file: Annotated[Optional[Path], _opt("model.backbone.pretrained_file", "Local backbone weights (timm "
                                                    "names) instead of the hub.", MODEL, auto="none", exists=True,
                                                    dir_okay=False)] = None,
    freeze_stages: Annotated[Optional[int], _opt("model.backbone.freeze_stages", "Freeze the backbone's stem (0) and "
                                                 "first N stages; -1 none.", MODEL, auto="1 for a BatchNorm CNN from "
                                                 "trained weights, else -1", min=-1)] = None,
    freeze_bn: Annotated[Optional[bool], _opt("model.backbone.freeze_bn", "Backbone BatchNorm with fixed statistics "
                                              "and affine.", MODEL, "--freeze-bn/--no-freeze-bn",
                                              auto="when the backbone starts from trained weights")] = None,
    fpn_channels: Annotated[Optional[int], _opt("model.fpn.out_channels", "FPN and head width.", MODEL,
                                                callback=positive("--fpn-channels"))] = None,
    head_convs: Annotated[Optional[int], _opt("model.head.num_convs", "Convs per head tower.", MODEL,
                                              callback=valid_if(lambda v: v >= 1, "at least 1"))] = None,
    size_ranges: Annotated[Optional[str], _opt("targets.size_ranges", "Level size boundaries m_1..m_4, e.g. "
                                               "64,128,256,512.", MODEL, auto="64,128,256,512 scaled to the image "
                                               "size", callback=numbers_option(increasing=True))] = None,
    center_sampling_radius: Annotated[Optional[float], _opt("targets.center_sampling_radius", "In strides; 0 turns "
                                                            "center sampling off.", MODEL, min=0.0)] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Start from these fcos_cli weights or a "
                                                   "published detector (`fcos weights`): their model, targets and "
                                                   "image size unless given; other classes are fine.",
                                                   callback=weights_option, rich_help_panel=MODEL)] = None,
    epochs: Annotated[Optional[int], _opt("train.epochs", "Training epochs.", OPTIM, callback=positive("--epochs"))
                      ] = None,
    batch_size: Annotated[Optional[int], _opt("train.batch_size", "Images per step.", OPTIM,
                                              callback=positive("--batch-size"))] = None,
    optimizer: Annotated[Optional[OptimizerName], _opt("train.optimizer", "Optimizer.", OPTIM)] = None,
    lr: Annotated[Optional[float], _opt("train.lr", "Peak learning rate.", OPTIM, auto="0.01 sgd, 0.001 adamw",
                                        callback=positive("--lr"))] = None,
    warmup_steps: Annotated[Optional[int], _opt("train.warmup_steps", "Linear warm-up steps (at most a third of "
                                                "training).", OPTIM, callback=valid_if(lambda v: v >= 0, "0 or more"))] = None,
    schedule: Annotated[Optional[ScheduleName], _opt("train.schedule", "cosine, or step (x0.1 at 2/3 and 8/9).",
                                                     OPTIM)] = None,
    grad_clip: Annotated[Optional[float], _opt("train.grad_clip", "Max gradient norm; 0 turns clipping off.", OPTIM,
                                               callback=valid_if(lambda v: v >= 0, "0 or more"))] = None,
    backbone_lr_mult: Annotated[Optional[float], _opt("model.backbone.lr_mult", "Backbone learning rate = lr x this.",
                                                      OPTIM, callback=positive("--backbone-lr-mult"))] = None,
    ema: Annotated[Optional[bool], _opt("train.ema", "Keep an EMA of the weights and evaluate/save it.", OPTIM,
                                        "--ema", flag=True)] = None,
    seed: Annotated[Optional[int], _opt("train.seed", "Random seed.", OPTIM)] = None,
    eval_interval: Annotated[Optional[int], _opt("train.eval_interval", "Validate every N epochs (and after the "
                                                 "last).", OPTIM, callback=positive("--eval-interval"))] = None,
    config: Annotated[Optional[list[Path]], typer.Option("--config", metavar="FILE", help="YAML or JSON config (the schema `fcos "
                                                         "config` prints; partial files welcome), after --size and "
                                                         "--weights.", exists=True, dir_okay=False,
                                                         rich_help_panel=OPTIM)] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="section.field=value for any config field "
                                                      "(repeatable), e.g. --set train.weight_decay=5e-5; after "
                                                      "--config, before the flags.", rich_help_panel=OPTIM)] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue a run from its last.safetensors; auto: continue "
                                                  "PROJECT/NAME if it has one (these options must be its own), "
                                                  "else start it.", rich_help_panel=OUTPUT)] = None,
    time: Annotated[Optional[str], typer.Option("--time", help="Time budget: stop at a step boundary before it runs "
                                                "out, save and print the --resume line (2h, 90m, 45s, 1h30m; a plain "
                                                "number is minutes).", rich_help_panel=OUTPUT)] = None,
    project: Annotated[str, typer.Option(help="Parent folder of runs.", rich_help_panel=OUTPUT)] = "runs/train",
    name: Annotated[str, typer.Option(help="Run name (numbered exp, exp2, ... when taken).", rich_help_panel=OUTPUT)
                    ] = "exp",
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Reuse an existing run folder.", metavar="",
                                           rich_help_panel=OUTPUT)] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", callback=device_option,
                                        rich_help_panel=HARDWARE)] = "auto",
    amp: Annotated[Optional[bool], _opt("train.amp", "Mixed precision: bf16 on CPU, fp16 on CUDA.", HARDWARE,
                                        "--amp/--no-amp", "--half/--no-half")] = None,
    compile: Annotated[Optional[bool], _opt("train.compile", "torch.compile the model (the first steps are slow).",
                                            HARDWARE, "--compile", flag=True)] = None,
    grad_checkpoint: Annotated[Optional[bool], _opt("train.grad_checkpoint", "Recompute activations in backward "
                                                    "(backbone stages where timm can, head towers): less memory for "
                                                    "large images, slower steps.", HARDWARE, "--grad-checkpoint",
                                                    flag=True)] = None,
    workers: Annotated[Optional[int], _opt("train.workers", "Data-loading processes (0: the main process).", HARDWARE,
                                           callback=valid_if(lambda v: v >= 0, "0 or more"))] = None,
) -> None:
    """Train an FCOS detector; writes last/best.safetensors, metrics.csv and curves.png under PROJECT/NAME."""
    from .config import assemble

    given = given_options(ctx)
    time_limit = parse_duration(time, "--time") if time is not None else None
    auto = resume == "auto"
    if resume and not auto:  # everything comes from the run's own config
        if not Path(resume).is_file():
            raise typer.BadParameter(f"{resume} is not a file (give a run's last.safetensors, or auto)",
                                     param_hint="--resume")
        ignored = [flag for option, flag in given.items() if option not in _RESUME_OPTIONS]
        if ignored:
            raise typer.BadParameter(f"a resumed run keeps its own config; drop {', '.join(ignored)} (only --device, "
                                     f"--workers, --compile, --grad-checkpoint and --time may change)",
                                     param_hint="--resume")
    if weights and not resume and (pretrained or pretrained_file):
        raise typer.BadParameter("the detector's weights replace the backbone's; drop --pretrained and "
                                 "--pretrained-file", param_hint="--weights")
    flags = {TRAIN_FLAGS[option]: str(value) if isinstance(value, Path) else value
             for option, value in ctx.params.items() if option in TRAIN_FLAGS and option in given}
    if "img_size" in given and "max_size" not in given:
        flags["data.max_size"] = None  # --img-size alone is a longest side, whatever the base had
    if resume or weights:
        from .checkpoint import read_info
    weights_path = resolve_weights(weights) if weights and not (resume and not auto) else None
    source = read_info(weights_path).config if weights_path else None
    cfg = (read_info(resume).config if resume and not auto
           else assemble(preset or "improved", size, source, config or (), set_ or (), flags))
    if auto:  # the same command again (a requeued job): continue PROJECT/NAME itself, else start it there
        resume = _own_last(Path(project) / check_run_name(name, project), cfg)
        cfg, weights_path = (read_info(resume).config, None) if resume else (cfg, weights_path)
        exist_ok = True
    for key, value in flags.items() if resume else ():  # --workers, --compile: how it runs on
        set_value(cfg, key, value)
    cfg.train.time_limit = time_limit
    _train(cfg, weights_path, Path(resume) if resume else None, device, project, name, exist_ok)


def _train(cfg, weights: Path | None, resume: Path | None, device: str, project: str, name: str,
           exist_ok: bool) -> None:
    """Open the data, build the model (before any run folder: a failed download leaves nothing), train, report."""
    from .data import open_data
    from .engine.common import resolve_device
    from .engine.distributed import close_distributed, init_distributed
    from .engine.stop import TIME_LIMIT, TrainingInterrupted
    from .engine.train import finetune_model, train
    from .model.catalog import check_backbone_name

    check_backbone_name(cfg.model.backbone.name)  # before any data is read
    dev = resolve_device(device)
    ranks, dev = init_distributed(dev)  # under torchrun: this process's rank and device
    if not ranks.is_main:  # rank 0 speaks for all
        console.quiet = err_console.quiet = True
    with ranks.main_first():  # rank 0 writes the demo cache before the others read it
        train_index, val_index = open_data(cfg.data.train, cfg.data.val, cfg.data.val_fraction, cfg.train.seed,
                                           cfg.data.images)
    report_data(train_index, val_index)
    model = None
    if weights is not None:
        model, report = finetune_model(weights, cfg, train_index.class_names)
        for line in report:
            console.print(line, highlight=False)
    elif resume is None:
        import torch

        from .config import resolve
        from .model import build_model

        bc = resolve(cfg).model.backbone
        why = ("" if bc.pretrained or bc.pretrained_file else " (the demo data trains from scratch; --pretrained loads "
               "timm's weights)" if cfg.data.train == "demo" else " (--no-pretrained)")
        torch.manual_seed(cfg.train.seed)
        cfg.model.num_classes = len(train_index.class_names)
        with ranks.main_first():  # one download, then the others read the cache
            model = build_model(cfg.model)
        console.print(f"backbone {bc.name}: {model.backbone.start}{why}", highlight=False, soft_wrap=True)
    if model is not None:
        report = model.backbone.load_report
        for line in [*(report.lines() if report else []), *(f"frozen: {f}" for f in model.backbone.frozen)]:
            console.print(line, highlight=False)
        if cfg.train.grad_checkpoint:
            whole = model.set_grad_checkpointing(True)
            console.print("gradient checkpointing: " + ("backbone stages and head towers" if whole else
                          f"head towers only (timm's {cfg.model.backbone.name} has no gradient checkpointing)"),
                          highlight=False)
    run_dir = resume.parent if resume else ranks.share(run_dir_for(project, name, exist_ok) if ranks.is_main else None)
    console.print(f"training on {len(train_index.records)} images ({', '.join(train_index.class_names)}), "
                  f"validating on {len(val_index.records) if val_index else 0}, device {dev}, run {run_dir}")
    if cfg.train.time_limit is not None:  # the command's budget (a resumed run gets a new one), less its start-up
        cfg.train.time_limit = max(cfg.train.time_limit - (time.monotonic() - state["started"]), 1e-3)
    try:
        with train_progress(cfg.train.epochs, enabled=ranks.is_main) as progress:
            result = train(cfg, train_index, val_index, run_dir, dev, model=model, resume=resume,
                           callbacks=progress, ranks=ranks)
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
    config (a changed job script is an error, not silently ignored); fields left to a rule (None) are not compared."""
    from . import checkpoint
    from .config import to_dict

    last = run_dir / "last.safetensors"
    if not last.is_file():
        return None

    def flat(tree: dict, prefix: str = "") -> dict:
        return {key: value for k, v in tree.items()
                for key, value in (flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v}).items()}

    ours, theirs = (flat(json.loads(json.dumps(to_dict(c)))) for c in (cfg, checkpoint.read_info(last).config))
    differ = [f"{k} {ours.get(k)} (the run's: {theirs.get(k)})" for k in sorted(ours.keys() | theirs.keys())
              if k not in _NOT_COMPARED and ours.get(k) is not None and ours.get(k) != theirs.get(k)]
    if differ:
        fail(f"--resume auto: {run_dir} was started with other options: {'; '.join(differ[:4])}"
             f"{' ...' if len(differ) > 4 else ''}; give its options, or another --name")
    return str(last)


@app.command("backbones")
def backbones_cmd(
    pattern: Annotated[Optional[str], typer.Argument(help="timm name pattern, e.g. 'convnext*'; a plain word "
                                                     "matches anywhere in the name \\[default: all models].")] = None,
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

    from .model.catalog import probe_backbone, suggest_backbones
    from .model.detector import check_backbone

    if check:
        size = parse_size_pair(img_size, "--img-size")
        if not timm.is_model(check):
            close = suggest_backbones(check)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise typer.BadParameter(f"unknown timm model {check!r}{hint}", param_hint="--check")
        rows = check_backbone(check, size)
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


# Options that eval, predict and inspect-targets share: the weights' settings, changed for one run.
IouOption = Annotated[Optional[float], typer.Option(help="NMS IoU threshold \\[default: the weights' config].",
                                                    min=0.0, max=1.0)]
MaxDetOption = Annotated[Optional[int], typer.Option(help="Detections per image \\[default: the weights' config].",
                                                     callback=positive("--max-det"))]
ImgSizeOption = Annotated[Optional[int], typer.Option(help="Longest side, or the short side with --max-size "
                                                      "\\[default: the weights' training size].",
                                                      callback=positive("--img-size"))]
MaxSizeOption = Annotated[Optional[int], typer.Option(help="Cap on the long side; makes --img-size the short side "
                                                      "(COCO: --img-size 800 --max-size 1333) \\[default: the "
                                                      "weights'].", callback=positive("--max-size"))]
Fp32Option = Annotated[bool, typer.Option("--fp32", help="Float32 throughout (default on a CPU with bf16: bf16 "
                                          "network, float32 decoding and NMS).")]


@app.command("eval")
def eval_cmd(
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help=WEIGHTS_HELP, callback=weights_option)
                       ] = None,
    data: Annotated[Optional[str], typer.Option(help=f"{DATA_OPTION_HELP} \\[default: the validation data recorded "
                                                "in the weights].")] = None,
    split: Annotated[Literal["train", "val"], typer.Option(help="Split of the data.")] = "val",
    images: Annotated[Optional[str], typer.Option(help="Image folder of a COCO file \\[default: beside it].")] = None,
    conf: Annotated[Optional[float], typer.Option(help="Drop detections scored below this, as fcos predict --conf, "
                                                  "and count the confusion matrix there \\[default: keep all; the "
                                                  "matrix at the best-F1 confidence].", min=0.0, max=1.0)] = None,
    iou: IouOption = None,
    max_det: MaxDetOption = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.", callback=positive("--batch-size"))] = 8,
    img_size: ImgSizeOption = None,
    max_size: MaxSizeOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.", callback=device_option)] = "auto",
    half: Annotated[bool, typer.Option("--half/--no-half", "--amp/--no-amp",
                                       help="Half precision: fp16 on CUDA, bf16 on CPU.")] = False,
    fp32: Fp32Option = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (slow first batch).")] = False,
    project: Annotated[str, typer.Option(help="Parent folder of eval outputs.")] = "runs/eval",
    name: Annotated[str, typer.Option(help="Output folder name (numbered when taken).")] = "exp",
) -> None:
    """COCO mAP of a weights file on a dataset, per-class precision/recall, the confidence to deploy (best F1)
    and a confusion matrix; writes results.json, metrics.json, curves, the matrix and sample drawings."""
    from . import checkpoint
    from .data import open_recorded, open_split
    from .engine.common import resolve_device
    from .engine.distributed import close_distributed, init_distributed
    from .engine.evaluate import evaluate
    from .engine.predict import inference_amp
    from .model.optimize import optimize_for_inference

    if half and fp32:
        fail("--half and --fp32 contradict each other: give one")
    path = resolve_weights(weights) if weights else default_weights()
    dev = resolve_device(device)
    ranks, dev = init_distributed(dev)  # under torchrun: each rank predicts its share, rank 0 scores
    if not ranks.is_main:
        console.quiet = err_console.quiet = True
    console.print(f"weights: {path}")
    model, cfg, class_names = checkpoint.load(path, dev)
    with ranks.main_first():  # rank 0 writes the demo cache before the others read it
        if data is None:
            index = open_recorded(cfg.data, split, cfg.train.seed)
        else:
            index = open_split(data, split, images)
    if data is None:
        console.print(f"data: {index.source or cfg.data.train} ({split} split, recorded in the weights)",
                      highlight=False, soft_wrap=True)
    report_data(index)
    if index.class_names != class_names:
        fail(f"the data's classes {index.class_names} differ from the weights' classes {class_names}")
    set_input_size(cfg.data, img_size, max_size)
    cfg.post.nms_iou = cfg.post.nms_iou if iou is None else iou
    cfg.post.max_detections = max_det or cfg.post.max_detections
    out = ranks.share(run_dir_for(project, name) if ranks.is_main else None)
    amp = inference_amp(dev, half, fp32)
    precision = ("fp16 autocast" if dev.type == "cuda" else "bf16 autocast") if amp else "float32"
    console.print(f"precision: {precision}; input: {describe_size(cfg.data)}"
                  f"{f'; {ranks.world_size} processes' if ranks.enabled else ''}", highlight=False)
    fast = optimize_for_inference(model, compile=compile)  # a copy: folded BatchNorm, channels_last
    try:
        result = evaluate(fast, cfg, index, dev, batch_size=batch_size, amp=amp,
                          out_dir=out if ranks.is_main else None, conf=conf, ranks=ranks)
    finally:
        close_distributed()
    if result is None:  # not rank 0
        return
    print_metrics(result)
    samples = f", samples/ ({min(4, len(index.records))} images)" if index.records else ""
    console.print(f"wrote {out}/results.json, metrics.json, pr_curve.png, confidence_curves.png, "
                  f"confusion_matrix.png{samples}", highlight=False, soft_wrap=True)


@app.command("predict")
def predict_cmd(
    source: Annotated[str, typer.Argument(help="An image, a video, a folder (searched recursively) or a glob.")],
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Weights file, a published detector "
                                                  "(`fcos weights`), or an ONNX file from `fcos export` \\[default: "
                                                  "newest runs/train/*/best.safetensors].", callback=weights_option)
                       ] = None,
    conf: Annotated[float, typer.Option(help="Lowest score drawn and written.", min=0.0, max=1.0)] = 0.25,
    iou: IouOption = None,
    max_det: MaxDetOption = None,
    img_size: ImgSizeOption = None,
    max_size: MaxSizeOption = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="Images or video frames per batch \\[default: 8 on CUDA; 1 on a CPU, where batches of 8 ran 12 % slower]"
        " (ONNX files run one at a time).", callback=positive("--batch-size"))] = None,
    vid_stride: Annotated[int, typer.Option(help="Videos: predict every N-th frame; the annotated video then holds "
                                            "only those frames, at 1/N of the frame rate (same duration).",
                                            callback=positive("--vid-stride"))] = 1,
    half: Annotated[bool, typer.Option("--half/--no-half", "--amp/--no-amp",
                                       help="Half precision: fp16 on CUDA, bf16 on CPU (not for ONNX files).")] = False,
    fp32: Fp32Option = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (slow first batch; not for "
                                          "ONNX files).")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (ONNX files: onnxruntime's CUDA provider).",
                                        callback=device_option)] = "auto",
    save_images: Annotated[bool, typer.Option("--save-images/--no-save-images", "--draw/--no-draw",
                                              help="Write annotated images and videos (at their path under SOURCE, "
                                              "in their own format).")] = True,
    save_txt: Annotated[bool, typer.Option("--save-txt", help="Write labels/PATH.txt per image (per video frame: "
                                           "labels/PATH/FRAME.txt) in YOLO format (class cx cy w h, normalised).")
                        ] = False,
    save_conf: Annotated[bool, typer.Option("--save-conf", help="Add the score to each --save-txt line.")] = False,
    save_crop: Annotated[bool, typer.Option("--save-crop", help="Write each detection cut out of its image to "
                                            "crops/CLASS/PATH.")] = False,
    classes: Annotated[Optional[str], typer.Option(help="Class indices to keep, e.g. 0,2 \\[default: all].",
                                                   callback=class_list_option)] = None,
    line_width: Annotated[Optional[int], typer.Option(help="Box line width in pixels \\[default: from the image "
                                                      "size].", callback=positive("--line-width"))] = None,
    hide_labels: Annotated[bool, typer.Option("--hide-labels", help="Draw boxes without class names.")] = False,
    hide_conf: Annotated[bool, typer.Option("--hide-conf", help="Draw class names without scores.")] = False,
    project: Annotated[str, typer.Option(help="Parent folder of prediction runs.")] = "runs/predict",
    name: Annotated[str, typer.Option(help="Output folder name (numbered when taken).")] = "exp",
) -> None:
    """Detect objects in images and videos: annotated copies, predictions.json (COCO results, original pixels) for
    images and PATH.jsonl (a line per frame) for videos; YOLO labels and crops on request. Outputs keep each file's
    path under SOURCE."""
    from functools import partial

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.table import Table
    from rich.text import Text

    from . import checkpoint
    from .data.sources import collect_inputs, is_video
    from .engine.common import resolve_device
    from .engine.predict import OnnxDetector, PredictOutputs, inference_amp, predict, predict_files, source_root
    from .model.optimize import optimize_for_inference

    if half and fp32:
        fail("--half and --fp32 contradict each other: give one")
    path = resolve_weights(weights) if weights else default_weights()
    files, others = collect_inputs(source, videos=True)
    if path.suffix == ".onnx":  # onnxruntime; the NMS settings are graph inputs, the resize happens here
        for flag, given in (("--half", half), ("--compile", compile)):
            if given:
                fail(f"{flag}: {path.name} runs as exported, in float32 on onnxruntime; {flag} applies to "
                     f"safetensors weights")
        detect = OnnxDetector(path, device)
        cfg, info = detect.cfg, detect.info
        batch_size = batch_size or 1
    else:
        dev = resolve_device(device)
        batch_size = batch_size or (8 if dev.type == "cuda" else 1)
        model, cfg, _ = checkpoint.load(path, dev)
        info = checkpoint.read_info(path)
        fast = optimize_for_inference(model, compile=compile)  # a copy: folded BatchNorm, channels_last
        detect = partial(predict, fast, cfg, batch_size=batch_size, amp=inference_amp(dev, half, fp32))
    cfg.post.nms_iou = cfg.post.nms_iou if iou is None else iou
    # The gate before NMS (post.score_thresh) would hide what a lower --conf asks to see: lower it to match.
    cfg.post.score_thresh = min(cfg.post.score_thresh, conf)
    cfg.post.max_detections = max_det or cfg.post.max_detections
    set_input_size(cfg.data, img_size, max_size)
    class_names, category_ids = info.class_names, info.category_ids
    keep = parse_class_list(classes, class_names) if classes else None
    out = run_dir_for(project, name)
    num_videos = sum(map(is_video, files))
    console.print(f"weights: {path}; {counted(len(files) - num_videos, 'image')}, {counted(num_videos, 'video')} "
                  f"-> {out}")
    for other in others:
        warn(f"skipped {other}: not an image or video file")

    class Rate(ProgressColumn):  # images/s or frames/s, from rich's own speed estimate
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} {task.fields['unit']}/s" if speed else "")

    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                  TimeRemainingColumn(), console=console) as bar:
        def show(what: str, unit: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total, unit=unit)
            bar.update(tasks[what], completed=done, total=total)

        outputs = PredictOutputs(save_images, save_txt, save_conf, save_crop, line_width, hide_labels, hide_conf)
        run = predict_files(detect, class_names, files, out, category_ids, conf, batch_size, outputs, keep,
                            source_root(source, files), show, vid_stride)
    for file, why in run.skipped:
        warn(f"skipped {file}: {why}")
    table = Table("class", "detections", title=f"Detections with score >= {conf}")
    for cls in class_names:
        table.add_row(cls, str(run.per_class.get(cls, 0)))
    console.print(table)
    skipped = len(run.skipped) + len(others)
    done, unit, wrote = counted(run.num_images, "image"), "images", "predictions.json"
    if num_videos:
        done, unit = f"{done} and {counted(run.num_frames, 'frame')} of {counted(run.num_videos, 'video')}", "frames"
        wrote += " and a .jsonl per video"
    per_second = (run.num_images + run.num_frames) / max(run.seconds, 1e-9)
    console.print(f"{done} in {run.seconds:.1f} s ({per_second:.1f} {unit}/s)"
                  f"{f', {skipped} files skipped' if skipped else ''}; "
                  f"wrote {out}/{wrote}")


@app.command("inspect-targets")
def inspect_targets_cmd(
    data: Annotated[str, typer.Option(help=f"{DATA_OPTION_HELP}.")] = "demo",
    preset: Annotated[PresetName, typer.Option(help="FCOS variant (ignored with --weights).")] = "improved",
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Take the settings of these weights "
                                                  "(a file or a published detector).", callback=weights_option)] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Longest side, or the short side with --max-size "
                                                    "\\[default: the weights' size, else 800].",
                                                    callback=positive("--img-size"))] = None,
    max_size: MaxSizeOption = None,
    size_ranges: Annotated[Optional[str], typer.Option(help="Level boundaries m_1..m_4, e.g. 64,128,256,512.")] = None,
    center_sampling_radius: Annotated[Optional[float], typer.Option(help="In strides; 0 turns it off.", min=0.0)] = None,
    num_images: Annotated[int, typer.Option(help="Images to explain.", callback=positive("--num-images"))] = 4,
    split: Annotated[Literal["train", "val"], typer.Option(help="Split of the data.")] = "train",
    images: Annotated[Optional[str], typer.Option(help="Image folder of a COCO file \\[default: beside it].")] = None,
    draw: Annotated[bool, typer.Option("--draw/--no-draw", "--save-images/--no-save-images",
                                       help="Write one overlay PNG per image and level.")] = True,
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
        cfg = checkpoint.read_info(resolve_weights(weights)).config
    else:
        cfg = make_preset(preset)
        cfg.data.img_size = 800
    set_input_size(cfg.data, img_size, max_size)
    if size_ranges:
        cfg.targets.size_ranges = parse_size_ranges(size_ranges, len(cfg.model.fpn.levels))
    if center_sampling_radius is not None:
        cfg.targets.center_sampling_radius = center_sampling_radius
    index = open_split(data, split, images)
    report_data(index)
    cfg.model.num_classes = len(index.class_names)
    out = run_dir_for(project, name)
    stats = inspect_dataset(index, cfg, num_images, out, draw)
    table = Table("", *stats, title=f"Target assignment on {min(num_images, len(index.records))} images "
                  f"({describe_size(cfg.data)}, ranges {list(cfg.targets.size_ranges)}, "
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
    from_: Annotated[Literal["torchvision", "mmdet", "fcos-original"], typer.Option(
        "--from", help="Who trained it (fcos-original: tianzhi0549/FCOS).")],
    output: Annotated[Optional[Path], typer.Option(help="Output weights \\[default: SOURCE with the suffix .safetensors].")] = None,
    variant: Annotated[Literal["auto", "paper", "improved"], typer.Option(help="mmdet / fcos-original: paper, or "
                                         "improved (imprv / 'tricks': "
                                         "center-ness on the regression tower, normalised boxes). auto reads the "
                                         "mmdet config in the file, else the file name, else paper.")] = "auto",
    allow_partial: Annotated[bool, typer.Option(help="Write even with source tensors left over or tensors of ours "
                                                "unfilled (those keep their random init).")] = False,
) -> None:
    """Convert a COCO-trained FCOS (torchvision, mmdetection, original FCOS) into fcos_cli weights for predict/eval."""
    from .import_weights import import_weights

    report = import_weights(source, from_, output, variant, allow_partial)
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


@app.command("weights")
def weights_cmd(
    download: Annotated[Optional[str], typer.Option(help="Fetch a published detector or a timm backbone's "
                                                   "pretrained weights (resnet50, resnet50.a1_in1k) into its cache "
                                                   "now, e.g. on a connected machine before going offline.")] = None,
) -> None:
    """Published COCO-trained FCOS detectors that -w takes by name: their COCO box AP and cache state."""
    from rich.table import Column, Table

    from .zoo import DETECTORS, cache_dir, cached_path

    if download and is_detector_name(download):
        weights_option(download)
        console.print(f"cached {resolve_weights(download)}", highlight=False, soft_wrap=True)
        return
    if download:
        from .model.backbone import hub_weights
        from .model.catalog import check_backbone_name

        check_backbone_name(download)
        path, tag = hub_weights(download)
        console.print(f"cached {tag}: {path}", highlight=False, soft_wrap=True)
        return
    table = Table(Column("-w NAME", no_wrap=True), "backbone", "COCO box AP", "cached", title="Published COCO detectors")
    for name, pub in DETECTORS.items():
        table.add_row(name, pub.backbone, f"{pub.box_ap:.1f}", "yes" if cached_path(name).is_file() else "no")
    console.print(table)
    console.print(f"cache: {cache_dir()} ($FCOS_CLI_CACHE); e.g. fcos predict photos/ -w "
                  f"torchvision:fcos_resnet50_fpn_coco", highlight=False, soft_wrap=True)


@app.command("export")
def export_cmd(
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help=WEIGHTS_HELP, callback=weights_option)
                       ] = None,
    format: Annotated[Literal["onnx", "safetensors"], typer.Option("--format", help="onnx (postprocess inside) or "
                                                                  "safetensors.")] = "onnx",
    output: Annotated[Optional[Path], typer.Option(help="Output file \\[default: beside the weights; for a published "
                                                   "detector, in the current folder].")] = None,
    half: Annotated[bool, typer.Option("--half", help="safetensors: store fp16 weights (ONNX is float32).")] = False,
    conf: Annotated[float, typer.Option(help="ONNX: the score you deploy with; the check compares detections from "
                                        "it up, and one below the weights' gate lowers the graph's default gate "
                                        "(an input, as the IoU and the detections per image are).",
                                        min=0.0, max=1.0)] = 0.25,
    check_images: Annotated[Optional[str], typer.Option(help="ONNX: a folder, glob or image to check the export on "
                                                        "\\[default: the validation data recorded in the weights, "
                                                        "else generated demo scenes].")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Sample size to trace the export with \\[default: the "
                                                    "weights'].", callback=positive("--img-size"))] = None,
) -> None:
    """Export a detector: ONNX with NMS inside (checked against PyTorch with onnxruntime on real images), or fp16
    safetensors."""
    import torch

    from . import checkpoint
    from .errors import UserError

    if half and format == "onnx":
        fail("--half: the ONNX export is float32 (onnxruntime's CPU kernels are); --format safetensors --half "
             "stores fp16 weights")
    path = resolve_weights(weights) if weights else default_weights()
    model, cfg, class_names = checkpoint.load(path)
    info = checkpoint.read_info(path)  # category ids, where it was imported from, ...
    beside = Path(path.name) if weights and is_detector_name(weights) else path  # not inside the cache
    if format == "safetensors":
        out = (output_file(output) if output
               else beside.with_name(beside.stem + (".fp16" if half else ".export") + ".safetensors"))
        checkpoint.save(out, model.half() if half else model, info)
        console.print(f"wrote {out}")
        return
    from .export import check_images as find_check_images
    from .export import check_onnx, export_onnx

    out = output_file(output) if output else beside.with_suffix(".onnx")
    images, source = find_check_images(cfg, check_images)  # before writing: a wrong folder leaves no file
    cfg.post.score_thresh = min(cfg.post.score_thresh, conf)  # the graph keeps what --conf deploys
    size = img_size or cfg.data.img_size
    torch.manual_seed(0)
    export_onnx(model, cfg, class_names, out, torch.rand(1, 3, size, size), category_ids=info.category_ids)
    try:
        check = check_onnx(out, model, cfg, images, conf, source)
    except UserError as e:
        out.unlink(missing_ok=True)  # a file that failed its check must not be deployed by mistake
        raise UserError(f"{e}; removed {out}") from e
    images_text = f"{check.num_images} image{'' if check.num_images == 1 else 's'}"
    console.print(f"wrote {out}; onnxruntime vs PyTorch on {images_text} from {source}: "
                  f"{check.num_detections} detections with score >= {conf} compared, raw head outputs differ by "
                  f"{check.raw:.1e}, boxes by {check.box:.1e} px, scores by {check.score:.1e}", soft_wrap=True)