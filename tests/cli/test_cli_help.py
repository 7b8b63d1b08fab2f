"""Every command's `--help` at 80 and 200 columns shows every default, every choice, no `<bool>` and no text eaten by
rich markup (a `[default: ...]` read as a markup tag leaves `Peak learning rate .`)."""

from __future__ import annotations

import re
import typing
from typing import Literal

import pytest
import typer
from typer.testing import CliRunner

from fcos_cli.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands.items())
BOX = re.compile(r"[\u2500-\u257f]")  # rich's panel borders


def _help(name: str, columns: int) -> str:
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": str(columns)}, terminal_width=columns)
    assert result.exit_code == 0, result.output
    return result.output


def _shows_default(param) -> bool:
    """A default worth showing: any value but a plain flag's off state (and --help)."""
    if param.name == "help" or param.default is None and "default:" not in (param.help or ""):
        return False
    return not (getattr(param, "is_flag", False) and not param.secondary_opts and not param.default)


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("name,command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_help_shows_defaults_and_choices(name: str, command, columns: int) -> None:
    text = _help(name, columns)
    flat = " ".join(BOX.sub(" ", text).split())  # wrapped lines joined
    bare = "".join(BOX.sub("", text).split())  # no spaces at all: choices folded inside their column
    params = [p for p in command.params if p.param_type_name == "option"]  # Typer may vendor its own Click
    expected = [p for p in command.params if _shows_default(p)]
    assert flat.count("[default:") == len(expected), \
        f"{name}: {flat.count('[default:')} defaults shown for {[p.name for p in expected]}"
    assert "<bool>" not in text, f"{name}: a plain flag shows a value type"
    assert not re.search(r"[a-z)] \.( |$)", flat), f"{name}: text before a ' .' was eaten: {flat}"
    for p in params if columns >= 200 else []:  # narrower, rich folds a long type column inside its cell
        ann = p.type_descriptor.annotation  # Optional already unwrapped: Literal["sgd", "adamw"]
        if typing.get_origin(ann) is Literal:
            listed = "<" + "|".join(map(str, typing.get_args(ann))) + ">"
            assert listed in bare, f"{name} {p.opts[0]}: choices {listed} not listed"


def test_choice_mistake_is_refused_by_click_before_any_import() -> None:
    """`--optimizer adam` fails in option parsing (no torch import, well under 2 s from a shell)."""
    result = CliRunner().invoke(app, ["train", "--optimizer", "adam"])
    assert result.exit_code == 2 and "'adam' is not one of 'sgd', 'adamw'" in result.output
