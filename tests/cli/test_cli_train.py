"""`fcos demo-data`, `fcos train` and `fcos eval` from the command line, on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fcos_cli import checkpoint
from fcos_cli.cli import app

runner = CliRunner()
TINY = ["--no-pretrained", "--backbone", "test_resnet", "--img-size", "128", "--fpn-channels", "32", "--head-convs", "1",
        "--batch-size", "2", "--workers", "0", "--optimizer", "adamw"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    result = runner.invoke(app, ["demo-data", str(root), "--num-train", "4", "--num-val", "2", "--seed", "5"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("runs")
    args = ["train", "--data", str(data / "train.json"), "--val-data", str(data / "val.json"), *TINY,
            "--epochs", "2", "--project", str(project), "--name", "tiny"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mAP50" in result.output
    return project / "tiny"


def test_train_writes_a_complete_run(trained: Path) -> None:
    names = {p.name for p in trained.iterdir()}
    assert {"last.safetensors", "best.safetensors", "last.state.safetensors", "config.json", "metrics.csv",
            "curves.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert len((trained / "metrics.csv").read_text().splitlines()) == 3
    assert json.loads((trained / "config.json").read_text())["model"]["backbone"]["name"] == "test_resnet"
    info = checkpoint.read_info(trained / "best.safetensors")
    assert info.class_names == ["ellipse", "rectangle", "triangle"] and info.category_ids == [1, 2, 3]


def test_weights_bring_their_model_unless_options_say_otherwise(data: Path, trained: Path) -> None:
    """`train -w` without model options continues the weights' architecture, image size and targets."""
    common = ["train", "--data", str(data / "train.json"), "--val-fraction", "0.5", "-w", str(trained / "last.safetensors"),
              "--epochs", "1", "--batch-size", "2", "--workers", "0", "--project", str(trained.parent)]
    result = runner.invoke(app, [*common, "--name", "again"])
    assert result.exit_code == 0, result.output
    total = len(checkpoint.load(trained.parent / "again" / "last.safetensors")[0].state_dict())
    assert f"loaded {total}/{total} tensors" in result.output  # every tensor (FrozenBatchNorm2d has no step counter)
    source, again = (json.loads((run / "config.json").read_text()) for run in (trained, trained.parent / "again"))
    # Fine-tuning trained weights takes the original recipe: BatchNorm, stem and first stage frozen.
    assert (source["model"]["backbone"]["freeze_bn"], again["model"]["backbone"]["freeze_bn"]) == (False, True)
    assert again["model"]["backbone"]["freeze_stages"] == 1 and "frozen: stem, layer1" in result.output
    for section in ("model", "targets", "loss", "post"):
        for config in (source, again):
            config["model"]["backbone"].update(freeze_bn=None, freeze_stages=None)
        assert again[section] == source[section], section
    assert again["data"]["img_size"] == 128 and again["model"]["fpn"]["out_channels"] == 32  # not the defaults
    wider = runner.invoke(app, [*common, "--name", "wider", "--fpn-channels", "64"])  # a given option wins
    assert wider.exit_code == 0, wider.output
    assert json.loads((trained.parent / "wider" / "config.json").read_text())["model"]["fpn"]["out_channels"] == 64
    assert f"loaded {total}/{total} tensors" not in wider.output


def test_max_size_makes_img_size_the_short_side_and_weights_keep_it(data: Path, trained: Path, tmp_path: Path) -> None:
    common = ["train", "--data", str(data / "train.json"), "--val-fraction", "0.5", "--epochs", "1", "--batch-size",
              "2", "--workers", "0", "--project", str(tmp_path)]
    result = runner.invoke(app, [*common, "-w", str(trained / "last.safetensors"), "--max-size", "160", "--name", "cap"])
    assert result.exit_code == 0, result.output
    capped = json.loads((tmp_path / "cap" / "config.json").read_text())["data"]
    assert (capped["img_size"], capped["max_size"]) == (128, 160)  # the weights' 128 is now the short side
    result = runner.invoke(app, [*common, "-w", str(tmp_path / "cap" / "last.safetensors"), "--name", "kept"])
    kept = json.loads((tmp_path / "kept" / "config.json").read_text())["data"]
    assert result.exit_code == 0 and (kept["img_size"], kept["max_size"]) == (128, 160)
    result = runner.invoke(app, ["eval", "-w", str(tmp_path / "kept" / "last.safetensors"), "--data",
                                 str(data / "val.json"), "--project", str(tmp_path), "--name", "e"])
    assert result.exit_code == 0 and "input: short side 128, long side at most 160" in result.output, result.output
    result = runner.invoke(app, ["eval", "-w", str(tmp_path / "kept" / "last.safetensors"), "--data",
                                 str(data / "val.json"), "--project", str(tmp_path), "--img-size", "96"])
    assert result.exit_code == 0 and "input: longest side 96" in result.output, result.output


def test_second_run_gets_a_new_numbered_folder(data: Path, trained: Path) -> None:
    args = ["train", "--data", str(data / "train.json"), "--val-fraction", "0.5", *TINY, "--epochs", "1",
            "--project", str(trained.parent), "--name", "tiny"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (trained.parent / "tiny2" / "last.safetensors").is_file()


def test_eval_prints_metrics_and_writes_results(data: Path, trained: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "-w", str(trained / "best.safetensors"), "--data", str(data / "val.json"),
                                 "--project", str(tmp_path), "--name", "e"])
    assert result.exit_code == 0, result.output
    assert "AP per class" in result.output and "mAP50" in result.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert set(metrics["per_class_ap"]) == {"ellipse", "rectangle", "triangle"}
    results = json.loads((tmp_path / "e" / "results.json").read_text())
    assert all(r["category_id"] in (1, 2, 3) and len(r["bbox"]) == 4 for r in results)
    assert (tmp_path / "e" / "pr_curve.png").is_file() or not results


def test_eval_without_data_takes_the_recorded_split_and_overrides_postprocessing(data: Path, trained: Path,
                                                                                  tmp_path: Path) -> None:
    weights = str(trained / "best.safetensors")
    result = runner.invoke(app, ["eval", "-w", weights, "--project", str(tmp_path), "--name", "val",
                                 "--max-det", "3", "--conf", "0.05"])
    assert result.exit_code == 0, result.output
    assert f"data: {data / 'val.json'} (val split, recorded in the weights)" in result.output
    results = json.loads((tmp_path / "val" / "results.json").read_text())
    per_image = [sum(r["image_id"] == i for r in results) for i in {r["image_id"] for r in results}]
    assert max(per_image, default=0) <= 3 and all(r["score"] >= 0.05 for r in results)
    result = runner.invoke(app, ["eval", "-w", weights, "--project", str(tmp_path), "--name", "train",
                                 "--split", "train"])
    assert result.exit_code == 0 and f"data: {data / 'train.json'} (train split" in result.output, result.output
    assert "samples/ (4 images)" in result.output  # the four training images, not the two of val.json
    # A run validated on a held-out fraction: eval finds the same held-out images again.
    held = runner.invoke(app, ["train", "--data", str(data / "train.json"), "--val-fraction", "0.5", *TINY,
                               "--epochs", "1", "--project", str(tmp_path), "--name", "held"])
    assert held.exit_code == 0, held.output
    result = runner.invoke(app, ["eval", "-w", str(tmp_path / "held" / "best.safetensors"), "--project",
                                 str(tmp_path), "--name", "e"])
    assert result.exit_code == 0 and "samples/ (2 images)" in result.output, result.output


def test_eval_refuses_data_with_other_classes(data: Path, trained: Path, tmp_path: Path) -> None:
    other = json.loads((data / "val.json").read_text())
    other["categories"][0]["name"] = "circle"
    path = data / "other.json"
    path.write_text(json.dumps(other))
    result = runner.invoke(app, ["eval", "-w", str(trained / "best.safetensors"), "--data", str(path),
                                 "--project", str(tmp_path)])
    assert result.exit_code == 2
    assert "circle" in result.output and "ellipse" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "nowhere.json"], "no such file"),
    (["train", "--backbone", "resnet5O", "--data", "{data}"], "resnet50"),
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--device", "cuda:0", "--data", "{data}"], "no CUDA"),
    (["eval", "-w", "missing.safetensors"], "missing.safetensors"),
])
def test_user_mistakes_exit_2_with_one_line(data: Path, args: list[str], message: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    args = [a.replace("{data}", str(data / "train.json")) for a in args] + ["--project", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
