"""Training engine: a tiny model overfits demo images, resume is exact, fine-tuning reports what it loaded."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from fcos_cli import checkpoint
from fcos_cli.data import open_split
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.engine.state import state_path
from fcos_cli.engine.train import TrainCallbacks, finetune_model, train
from fcos_cli.errors import UserError
from fcos_cli.metadata import WeightsInfo

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return write_demo_data(tmp_path_factory.mktemp("demo"), num_train=6, num_val=2, max_side=256, seed=3)


def test_tiny_model_overfits_four_demo_images(overfit) -> None:
    result, root = overfit
    index = open_split(root / "train.json")
    assert len(index.records) == 4 and sum(len(r.boxes) for r in index.records) >= 8
    assert any(len(r.boxes) == 0 for r in index.records)  # a negative image is part of it
    with open(result.run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    # Classification and box losses can reach ~0; center-ness BCE cannot fall below the entropy
    # of its soft targets (~0.55 here), so the fall is measured on the two learnable terms.
    learnable = lambda r: float(r["cls"]) + float(r["box"])  # noqa: E731
    assert learnable(first) / learnable(last) >= 5, (first, last)
    assert result.final.metrics["AP50"] >= 0.9
    assert (result.run_dir / "curves.png").stat().st_size > 1000
    assert checkpoint.read_info(result.best).class_names == index.class_names


def test_resume_gives_the_weights_of_uninterrupted_training(demo: Path, tmp_path: Path) -> None:
    index, val = open_split(demo / "train.json"), open_split(demo / "val.json")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train(tiny_config(epochs=3), index, val, tmp_path / "a", CPU)

    class Interrupt(Exception):
        pass

    class StopAfterFirst(TrainCallbacks):
        def epoch_ended(self, row: dict) -> None:
            if row["epoch"] == 1:
                raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_config(epochs=3), index, val, tmp_path / "b", CPU, callbacks=StopAfterFirst())
    interrupted = checkpoint.load(tmp_path / "b" / "last.safetensors")[0].state_dict()
    cfg = checkpoint.read_info(tmp_path / "b" / "last.safetensors").config
    train(cfg, index, val, tmp_path / "b", CPU, resume=tmp_path / "b" / "last.safetensors")
    full = checkpoint.load(tmp_path / "a" / "last.safetensors")[0].state_dict()
    resumed = checkpoint.load(tmp_path / "b" / "last.safetensors")[0].state_dict()
    assert any(not torch.equal(full[k], interrupted[k]) for k in full)  # epochs 2-3 changed the weights
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-5, atol=1e-6)
    with open(tmp_path / "b" / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"]


def test_resume_refuses_a_state_from_another_checkpoint(demo: Path, tmp_path: Path) -> None:
    index = open_split(demo / "train.json")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        train(tiny_config(epochs=1), index, None, tmp_path / name, CPU)
    last_a = tmp_path / "a" / "last.safetensors"
    state_path(last_a).write_bytes(state_path(tmp_path / "b" / "last.safetensors").read_bytes())
    cfg = checkpoint.read_info(last_a).config
    cfg.train.epochs = 2
    with pytest.raises(UserError, match="does not match"):
        train(cfg, index, None, tmp_path / "a", CPU, resume=last_a)


def test_finetune_loads_what_fits_and_reinitialises_other_classes(demo: Path, tmp_path: Path) -> None:
    index = open_split(demo / "train.json")
    (tmp_path / "run").mkdir()
    result = train(tiny_config(epochs=1), index, None, tmp_path / "run", CPU)
    source = checkpoint.load(result.last)[0].state_dict()
    cfg = tiny_config(epochs=1)
    model, report = finetune_model(result.last, cfg, ["cat", "dog"])
    own = model.state_dict()
    assert own["head.cls_logits.weight"].shape[0] == 2
    assert torch.equal(own["head.box_tower.0.weight"], source["head.box_tower.0.weight"])
    assert "re-initialised" in " ".join(report) and "head.cls_logits.weight" in " ".join(report)
    same, _ = finetune_model(result.last, tiny_config(epochs=1), index.class_names)
    assert torch.equal(same.state_dict()["head.cls_logits.weight"], source["head.cls_logits.weight"])
    other = tiny_config(epochs=1)
    other.model.backbone.name = "test_convnext"
    with pytest.raises(UserError, match="test_resnet.*test_convnext"):
        finetune_model(result.last, other, ["cat"])


def test_finetune_keeps_the_input_convention_of_the_source(tmp_path: Path) -> None:
    """An imported caffe-style detector (BGR, 0-255 mean, stride on the 1x1 conv) is fine-tuned on its own input."""
    from fcos_cli.model import build_model

    source_cfg = tiny_config(epochs=1)
    source_cfg.model.num_classes = 1
    source_cfg.model.channel_order, source_cfg.model.pixel_mean = "bgr", (102.98, 115.95, 122.77)
    source_cfg.model.pixel_std = (1.0, 1.0, 1.0)
    path = checkpoint.save(tmp_path / "caffe.safetensors", build_model(source_cfg.model),
                           WeightsInfo(source_cfg, ["thing"]))
    cfg = tiny_config(epochs=1)
    model, _ = finetune_model(path, cfg, ["a", "b"])
    assert (cfg.model.channel_order, cfg.model.pixel_mean, cfg.model.pixel_std) == (
        "bgr", (102.98, 115.95, 122.77), (1.0, 1.0, 1.0))
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # the box branch is loaded whole: same input handling gives the same boxes
        torch.testing.assert_close(model.eval()(images).box_regression[0],
                                   checkpoint.load(path)[0](images).box_regression[0])
