"""The `fcos` command line: --version, --help, `config`, one-line errors, `python -m fcos_cli`, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fcos_cli
from fcos_cli import checkpoint
from fcos_cli.cli import app
from fcos_cli.config import from_dict, preset
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.metadata import WeightsInfo
from fcos_cli.model import build_model

from conftest import tiny_config, wait_for

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


@pytest.mark.parametrize("command, written", [("eval", "results.json"), ("predict", "predictions.json")])
def test_sigterm_to_the_group_mid_write_leaves_no_partial_json_and_one_line(command: str, written: str,
                                                                            tmp_path: Path) -> None:
    demo = write_demo_data(tmp_path / "demo", num_train=1, num_val=2, max_side=64, seed=1)
    cfg = tiny_config(epochs=1, img_size=64)
    cfg.model.num_classes = 3
    weights = checkpoint.save(tmp_path / "w.safetensors", build_model(cfg.model),
                              WeightsInfo(cfg, ["ellipse", "rectangle", "triangle"]))
    args = {"eval": ["eval", "--data", str(demo / "val.json")], "predict": ["predict", str(demo / "images"),
                                                                      "--no-save-images"]}[command]
    out = tmp_path / "runs" / "x"
    process = subprocess.Popen([sys.executable, "-m", "fcos_cli", *args, "-w", str(weights), "--project",
                                str(out.parent), "--name", out.name], start_new_session=True, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "FCOS_CLI_TEST_RENAME_DELAY": f"{written}:60"})
    wait_for(out / f".{Path(written).stem}.tmp.json", process)  # finished in its temporary file, not yet renamed
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert [line for line in err.splitlines() if line.strip()] == ["stopped by SIGTERM"]
    assert not list(out.glob("*.json")) and not list(out.glob(".*"))  # neither the file nor its temporary


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("45s", 45), ("1h30m", 5400),
                                           ("1h0m30s", 3630), ("1.5h", 5400), ("90", 5400), ("0.5", 30)])
def test_time_budget_spellings(text: str, seconds: float) -> None:
    from fcos_cli.cli_options import parse_duration

    assert parse_duration(text, "--time") == seconds
