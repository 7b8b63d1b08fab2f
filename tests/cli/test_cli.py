"""The `fcos` command line: --version, --help, `config`, one-line errors, `python -m fcos_cli`, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config, wait_for
from typer.testing import CliRunner

import fcos_cli
from fcos_cli import checkpoint
from fcos_cli.cli import app
from fcos_cli.config import from_dict, preset
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.metadata import WeightsInfo
from fcos_cli.model import build_model

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


def _run_with_a_corrupt_training_state(tmp_path: Path) -> Path:
    """A run's last.safetensors whose training state is not a safetensors file: `--resume` fails reading it."""
    demo = write_demo_data(tmp_path / "demo", num_train=1, num_val=1, max_side=64, seed=1)
    cfg = tiny_config(epochs=2, img_size=64)
    cfg.data.train, cfg.data.val, cfg.model.num_classes = str(demo / "train.json"), str(demo / "val.json"), 3
    (tmp_path / "run").mkdir()
    last = checkpoint.save(tmp_path / "run" / "last.safetensors", build_model(cfg.model),
                           WeightsInfo(cfg, ["ellipse", "rectangle", "triangle"]))
    (tmp_path / "run" / "last.state.safetensors").write_bytes(b"not a safetensors file")
    return last


def test_a_user_error_is_one_line_and_debug_shows_its_traceback_and_cause(tmp_path: Path) -> None:
    """One boundary (no wrapper at the call): the error's own line, exit 2; with --debug Python's traceback of
    the UserError and of the library error it was raised from."""
    last = _run_with_a_corrupt_training_state(tmp_path)
    plain = subprocess.run([sys.executable, "-m", "fcos_cli", "train", "--resume", str(last)], capture_output=True,
                           text=True, timeout=120)
    assert plain.returncode == 2, plain.stderr
    lines = [line for line in plain.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot resume from {last.parent}"), plain.stderr
    assert "unreadable" in lines[0] and "Traceback" not in plain.stderr
    debug = subprocess.run([sys.executable, "-m", "fcos_cli", "--debug", "train", "--resume", str(last)],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and debug.stderr.count("Traceback (most recent call last)") == 2, debug.stderr
    cause, _, error = debug.stderr.partition("The above exception was the direct cause of the following exception")
    assert "SafetensorError" in cause and "fcos_cli/engine/state.py" in cause, debug.stderr
    assert "fcos_cli.errors.UserError: cannot resume from" in error and "fcos_cli/engine/train.py" in error


def test_an_os_error_on_a_users_path_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    result = runner.invoke(app, ["demo-data", str(tmp_path / "a_file" / "demo"), "--num-train", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == f"error: {tmp_path / 'a_file' / 'demo' / 'images'}: Not a directory", result.stderr
    debug = runner.invoke(app, ["--debug", "demo-data", str(tmp_path / "a_file" / "demo")])
    assert isinstance(debug.exception, NotADirectoryError)


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
    hooked = str(Path(__file__).parents[1] / "hooked_fcos.py")  # fcos with the rename of WRITTEN held back
    process = subprocess.Popen([sys.executable, hooked, *args, "-w", str(weights), "--project", str(out.parent),
                                "--name", out.name], start_new_session=True, text=True,
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
