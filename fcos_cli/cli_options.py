"""How the `fcos` commands read options and report mistakes: every user mistake is one red line and exit 2.

`OneLineErrors` is the one error boundary: a library `UserError` (or an `OSError` on a user's path) raised
anywhere in a command becomes that line (the traceback, with its cause, under `--debug`). Also option callbacks
and parsers (`positive`, `valid_if`, `parse_*`), run and output locations, and the training progress bars.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperGroup, TyperOption

from .errors import UserError, one_line
from .zoo import check_detector_name, is_detector_name, resolve_weights  # noqa: F401 - resolve_weights for cli.py


def _no_flag_type(display_type_rich):
    """Typer shows `<bool>` after plain flags (`--help <bool>`), which invites `--compile=false`: show nothing."""
    def display(self, ctx):
        return None if self.is_flag else display_type_rich(self, ctx)
    return display


if hasattr(TyperOption, "display_type_rich"):  # typer's private hook (0.12-0.19); other versions show `<bool>`
    TyperOption.display_type_rich = _no_flag_type(TyperOption.display_type_rich)
console = Console()
err_console = Console(stderr=True)
state = {"debug": False}


class OneLineErrors(TyperGroup):
    """The error boundary of every command: a `UserError` or `OSError` is one red line and exit 2 (re-raised
    under `--debug`, so that Python prints its traceback and the cause it was raised from); Click's usage errors
    (a bad option value, an unknown option) are one line too, not a usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        import sys

        try:  # Typer >= 0.24 vendors Click as typer._click; older versions use Click itself
            from typer._click import exceptions as click
        except ImportError:
            from click import exceptions as click

        from rich.markup import escape

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            with _sigterm_unwinds():
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except getattr(click, "NoArgsIsHelpError", ()):  # `fcos` alone: Typer's help as usual (Click >= 8.2)
            return super().main(args, prog_name, complete_var, standalone_mode=True, **extra)
        except (UserError, OSError) as e:
            if state["debug"] or (isinstance(e, OSError) and e.filename is None):  # no path: a bug, not a mistake
                raise
            _error_line(_describe(e))
            sys.exit(2)
        except click.ClickException as e:
            hint = f" (see {e.ctx.command_path} --help)" if getattr(e, "ctx", None) is not None else ""
            err_console.print(f"[red]error:[/red] {escape(one_line(e.format_message()))}{escape(hint)}",
                              highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except (typer.Abort, Terminated) as e:  # Click turns Ctrl-C's KeyboardInterrupt into Abort
            signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
            err_console.print(f"[yellow]stopped by {signum.name}[/yellow]", highlight=False)
            sys.exit(128 + signum)  # the shell's code for a process the signal ended
        sys.exit(code if isinstance(code, int) else 0)


class Terminated(BaseException):
    """SIGTERM outside a training loop (which stops at a step boundary instead): unwinds like Ctrl-C, so that
    temporary files are removed and the command ends with one line. Not an `Exception`: nothing swallows it."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    def handler(signum, frame) -> None:
        raise Terminated

    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def counted(n: int, noun: str) -> str:
    """`1 image`, `3 images`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _describe(e: UserError | OSError) -> str:
    """The message alone: a cause it was raised from shows under --debug only. An OSError names its path."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def _error_line(message: str) -> None:
    from rich.markup import escape

    err_console.print(f"[red]error:[/red] {escape(one_line(message))}", highlight=False, soft_wrap=True)


def fail(message: str):
    """One red line on stderr and exit code 2: how every user mistake the CLI itself finds ends."""
    _error_line(message)
    raise typer.Exit(2)


def warn(message: str) -> None:
    from rich.markup import escape

    err_console.print(f"[yellow]warning:[/yellow] {escape(one_line(message))}", highlight=False, soft_wrap=True)


def default_weights() -> Path:
    """Newest runs/train/*/best.safetensors, else last.safetensors."""
    runs = sorted((p for p in Path("runs/train").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for run in runs:
        for name in ("best.safetensors", "last.safetensors"):
            if (run / name).is_file():
                return run / name
    raise UserError("no --weights given and no runs/train/*/best.safetensors to default to (train first)")


def weights_option(value: str | None) -> str | None:
    """`-w`: an existing file, or a published detector name (fetched later, in the command)."""
    if value is None:
        return None
    if is_detector_name(value):
        try:
            check_detector_name(value)
        except UserError as e:
            raise typer.BadParameter(str(e)) from None
    elif not Path(value).exists():
        raise typer.BadParameter(f"file {value!r} does not exist.")
    elif Path(value).is_dir():
        raise typer.BadParameter(f"file {value!r} is a directory.")
    return value


def numbers_option(increasing: bool = False):
    """An option callback for comma-separated positive whole numbers (sizes, size ranges), checked up front."""
    def check(value: str | None) -> str | None:
        if value is not None:
            values = [v.strip() for v in value.split(",")]
            if not all(v.isdigit() and int(v) > 0 for v in values):
                raise typer.BadParameter(f"expected comma-separated positive whole numbers, got {value!r}")
            if increasing and any(int(b) <= int(a) for a, b in pairwise(values)):
                raise typer.BadParameter(f"boundaries must increase, got {value!r}")
        return value
    return check


def parse_int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated whole numbers, got {text!r}", param_hint=flag) from None
    if any(v <= 0 for v in values):
        raise typer.BadParameter(f"values must be positive, got {text!r}", param_hint=flag)
    return values


def class_list_option(value: str | None) -> str | None:
    """--classes: comma-separated class indices (0 or more), checked against the weights' classes later."""
    if value is not None and not all(v.strip().isdigit() for v in value.split(",")):
        raise typer.BadParameter(f"expected comma-separated class indices like 0,2, got {value!r}")
    return value


def parse_class_list(text: str, class_names: list[str]) -> tuple[int, ...]:
    values = tuple(sorted({int(v) for v in text.split(",")}))
    if values[-1] >= len(class_names):
        shown = ", ".join(f"{i} {n}" for i, n in enumerate(class_names[:10]))
        fail(f"--classes {text}: class {values[-1]} is not in 0..{len(class_names) - 1} ({shown}"
             f"{', ...' if len(class_names) > 10 else ''})")
    return values


def positive(name: str):
    def check(value):
        if value is not None and value <= 0:
            raise typer.BadParameter(f"must be positive, got {value}")  # Click names the option
        return value
    return check


def valid_if(test, expected: str):
    """An option callback: `value` must pass `test`, else one line saying what was `expected`."""
    def check(value):
        if value is not None and not test(value):
            raise typer.BadParameter(f"expected {expected}, got {value}")
        return value
    return check


def device_option(value: str) -> str:
    if value not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", value):
        raise typer.BadParameter(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def parse_duration(text: str, flag: str) -> float:
    """A time budget in seconds from 2h, 90m, 45s, 1h30m or plain minutes (90)."""
    try:
        seconds = float(text) * 60
    except ValueError:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?", text.strip())
        if not text.strip() or parts is None:
            raise typer.BadParameter(f"expected a duration like 2h, 90m, 45s, 1h30m or minutes (90), got {text!r}",
                                     param_hint=flag) from None
        seconds = sum(float(v or 0) * unit for v, unit in zip(parts.groups(), (3600, 60, 1), strict=True))
    if not 0 < seconds < float("inf"):
        raise typer.BadParameter(f"must be a positive duration, got {text!r}", param_hint=flag)
    return seconds


def parse_size_ranges(text: str, num_levels: int) -> tuple[float, ...]:
    """--size-ranges: one boundary between each two levels, increasing."""
    values = parse_int_list(text, "--size-ranges")
    if len(values) != num_levels - 1:
        raise typer.BadParameter(f"expected {num_levels - 1} boundaries for {num_levels} levels "
                                 f"(e.g. 64,128,256,512), got {text!r}", param_hint="--size-ranges")
    if any(b <= a for a, b in pairwise(values)):
        raise typer.BadParameter(f"boundaries must increase, got {text!r}", param_hint="--size-ranges")
    return tuple(float(v) for v in values)


def run_dir_for(project: str, name: str, exist_ok: bool = False) -> Path:
    """PROJECT/NAME, numbered NAME2, NAME3, ... when taken; a NAME that leaves PROJECT or a PROJECT that is a
    file is one error line."""
    from .engine.common import next_run_dir

    try:
        return next_run_dir(project, check_run_name(name, project), exist_ok)
    except OSError as e:
        fail(f"--project {project}: cannot create the run folder {Path(project) / name} ({e.strerror})")


def check_run_name(name: str, project: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        fail(f"--name {name!r}: expected a plain folder name (it goes under --project {project})")
    return name


def output_file(output: Path) -> Path:
    if output.is_dir():
        fail(f"--output {output} is a folder; give a file name")
    if not output.parent.is_dir():
        fail(f"--output {output}: the folder {output.parent} does not exist")
    return output


def report_data(*indexes) -> None:
    """One warning line per dataset load: the images it skipped and the boxes it dropped or clipped."""
    seen = set()
    for index in indexes:
        if index is None or index.source in seen:  # a --val-fraction split shares its file's report
            continue
        seen.add(index.source)
        parts = []
        if index.skipped_files:
            names = ", ".join(f"{path} ({why})" for path, why in index.skipped_files[:3])
            more = f" and {len(index.skipped_files) - 3} more" if len(index.skipped_files) > 3 else ""
            parts.append(f"skipped {len(index.skipped_files)} image(s): {names}{more}")
        parts += [f"dropped {n} {reason}" for reason, n in index.skipped.items() if not reason.startswith("images")]
        if index.clipped:
            parts.append(f"clipped {index.clipped} boxes to the image")
        if parts:
            warn(f"{index.source or 'data'}: {'; '.join(parts)}")


def given_options(ctx: typer.Context) -> dict[str, str]:
    """Name -> flag(s) of the command's options given on the command line (or environment), not defaulted."""
    return {p.name: "/".join(p.opts + p.secondary_opts) for p in ctx.command.params
            if (source := ctx.get_parameter_source(p.name)) is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")}


def set_input_size(data, img_size: int | None, max_size: int | None) -> None:
    """--img-size / --max-size over a config's `DataConfig`: --img-size alone is a longest side (the cap is
    dropped), with --max-size a short side; --max-size alone makes the config's size a short side."""
    if img_size is not None:
        data.img_size, data.max_size = img_size, max_size
    elif max_size is not None:
        data.max_size = max_size


def describe_size(data) -> str:
    if data.max_size is None:
        return f"longest side {data.img_size}"
    return f"short side {data.img_size}, long side at most {data.max_size}"


def parse_size_pair(text: str, flag: str) -> tuple[int, int]:
    values = parse_int_list(text, flag)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise typer.BadParameter(f"expected H,W (or one side), got {text!r}", param_hint=flag)
    return values[0], values[1]


@contextlib.contextmanager
def train_progress(epochs: int, enabled: bool = True) -> Iterator:
    """`TrainCallbacks` that draw a progress bar per epoch and print a line per validated epoch and per epoch
    with skipped steps (above the bars)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .engine.train import TrainCallbacks

    columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ips]:.1f} img/s"), TimeRemainingColumn()]

    class Bars(TrainCallbacks):
        def epoch_started(self, epoch: int, steps: int, done: int, loss: float) -> None:
            self.task = bar.add_task("train", total=steps, completed=done, epoch=f"{epoch}/{epochs}", loss=loss,
                                     ips=0.0)

        def step_done(self, loss: float, images_per_s: float) -> None:
            bar.update(self.task, advance=1, loss=loss, ips=images_per_s)

        def epoch_ended(self, row: dict) -> None:
            if "AP" in row:
                console.print(f"epoch {row['epoch']}: loss {row['loss']:.3f}  AP {row['AP']:.3f}  "
                              f"AP50 {row['AP50']:.3f}")
            if row["skipped_steps"]:
                console.print(f"epoch {row['epoch']}: {row['skipped_steps']} steps skipped (non-finite loss or "
                              f"gradients)")

    with Progress(*columns, console=console, disable=not enabled, transient=False) as bar:
        yield Bars()


def print_metrics(result) -> None:
    """The COCO table, AP per class (with counts and precision/recall at the best-F1 confidence when `result`
    has diagnostics), the best-F1 confidence to deploy and, for a few classes, the confusion matrix."""
    from rich.table import Table

    if result is None:
        return
    table = Table("metric", "value", title="COCO metrics")
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        table.add_row(key, f"{result.metrics[key]:.3f}")
    console.print(table)
    diag = result.diagnostics
    if diag is None:
        per_class = Table("class", "AP", title="AP per class")
        for name, ap in result.per_class_ap.items():
            per_class.add_row(name, "-" if ap != ap else f"{ap:.3f}")
        console.print(per_class)
    else:
        from .engine.diagnostics import conf_text
        from .engine.evaluate import per_class_rows

        names = list(result.per_class_ap)
        conf = conf_text(diag.best_conf)
        per_class = Table("class", "images", "instances", "AP", "AP50", "P", "R",
                          title=f"AP per class; P and R at the best-F1 confidence {conf}, IoU 0.5")
        for row in per_class_rows(result, names):
            per_class.add_row(row["class"], str(row["images"]), str(row["instances"]),
                              *("-" if row[k] != row[k] else f"{row[k]:.3f}" for k in ("AP", "AP50", "precision", "recall")))
        console.print(per_class)
        if len(names) <= 10:  # larger matrices are read in confusion_matrix.png / metrics.json
            matrix = Table("true / predicted", *names, "background",
                           title=f"Confusion matrix (IoU 0.5, confidence >= {conf_text(diag.confusion_conf)})")
            for name, row in zip([*names, "background"], diag.confusion.tolist(), strict=True):
                matrix.add_row(name, *map(str, row))
            console.print(matrix)
        if diag.best_f1 > 0:
            console.print(f"best F1 {diag.best_f1:.3f} at confidence {conf} (IoU 0.5): deploy with "
                          f"fcos predict --conf {conf}", highlight=False, soft_wrap=True)
        else:
            console.print("best F1 0: no detection finds a box at IoU 0.5, so no confidence to recommend",
                          highlight=False, soft_wrap=True)
    console.print(f"mAP {result.metrics['AP']:.3f}  mAP50 {result.metrics['AP50']:.3f}")
    if result.num_unread:
        console.print(f"{result.num_unread} image{'s' if result.num_unread > 1 else ''} could not be read: "
                      f"scored as images without detections", highlight=False)
