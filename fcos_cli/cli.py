"""The `fcos` command line: parse, validate, call one library function, print. Nothing else."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import UserError

app = typer.Typer(help="FCOS object detection on any timm backbone.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


def _run(fn, *args, **kwargs):
    """Call library code; a UserError becomes one red line and exit code 2 (traceback with --debug)."""
    try:
        return fn(*args, **kwargs)
    except UserError as e:
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


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
    _state["debug"] = debug


@app.command("config")
def config_cmd(
    preset: Annotated[str, typer.Option(help="Preset: paper, improved (default) or torchvision.")] = "improved",
) -> None:
    """Print a preset's full configuration as JSON (every field the weights file records)."""
    from .config import preset as make_preset, to_dict

    cfg = _run(make_preset, preset)
    console.print_json(json.dumps(to_dict(cfg)))
