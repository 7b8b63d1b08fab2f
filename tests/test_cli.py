"""The `fcos` command line: --version, --help, `config`, one-line errors, `python -m fcos_cli`."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

import fcos_cli
from fcos_cli.cli import app
from fcos_cli.config import from_dict, preset

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert fcos_cli.__version__ in result.stdout
    assert result.stdout.strip() == f"fcos_cli {fcos_cli.__version__}"


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("config", "demo-data", "train", "eval"):
        assert command in result.stdout
    assert "--version" in result.stdout


def test_no_arguments_shows_help():
    result = runner.invoke(app, [])
    assert "config" in result.output and "train" in result.output


def test_config_paper_json():
    result = runner.invoke(app, ["config", "--preset", "paper"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    cfg = from_dict(data)
    assert cfg == preset("paper")
    assert cfg.preset == "paper"
    assert cfg.targets.center_sampling_radius == 0
    assert cfg.loss.box_loss == "iou"
    assert cfg.model.head.box_activation == "exp"
    assert cfg.model.head.centerness_on_reg is False


def test_config_default_is_improved():
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert from_dict(json.loads(result.stdout)) == preset("improved")


def test_unknown_preset_is_one_line_exit_2():
    result = runner.invoke(app, ["config", "--preset", "nope"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "nope" in lines[0] and "error" in lines[0].lower()
    assert result.stdout.strip() == ""
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no crash


def test_user_error_with_debug_raises():
    result = runner.invoke(app, ["--debug", "train", "--set", "train.nope=1"])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "UserError"


def test_python_dash_m_version():
    proc = subprocess.run([sys.executable, "-m", "fcos_cli", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fcos_cli {fcos_cli.__version__}"
    assert "Traceback" not in proc.stderr
