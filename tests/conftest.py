"""Shared fixtures and helpers: one tiny detector trained (overfitted) on four demo images, reused by several
tests; tiny training runs from the command line, in a subprocess or not, and their weights compared."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

# Tests never touch the network: the Hugging Face hub (timm's pretrained weights) answers from local caches only,
# here and in every `fcos` subprocess. Set before huggingface_hub is imported, which reads it once.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from fcos_cli import checkpoint
from fcos_cli.config import FCOSConfig, preset
from fcos_cli.data import open_split
from fcos_cli.data.synthetic import write_demo_data
from fcos_cli.engine.train import TrainResult, train


def tiny_config(epochs: int, img_size: int = 128) -> FCOSConfig:
    """test_resnet with a 32-channel FPN, two convs per tower and ranges halved for small images."""
    cfg = preset("improved")
    m, t = cfg.model, cfg.train
    m.backbone.name, m.fpn.out_channels, m.head.num_groups, m.head.num_convs = "test_resnet", 32, 8, 2
    cfg.targets.size_ranges = (32, 64, 128, 256)
    cfg.data.img_size = img_size
    t.epochs, t.batch_size, t.optimizer, t.lr, t.warmup_steps, t.workers = epochs, 4, "adamw", 3e-3, 10, 0
    return cfg


@pytest.fixture(scope="session")
def overfit(tmp_path_factory) -> tuple[TrainResult, Path]:
    """60 steps on 4 demo images (~25 s): a model that really detects them. Returns the run and the data root."""
    root = write_demo_data(tmp_path_factory.mktemp("four"), num_train=4, num_val=1, max_side=256, seed=6)
    index = open_split(root / "train.json")
    cfg = tiny_config(epochs=60, img_size=256)
    cfg.data.hflip, cfg.data.color_jitter = 0.0, False
    cfg.train.lr, cfg.train.eval_interval = 4e-3, 30
    torch.manual_seed(0)
    return train(cfg, index, index, tmp_path_factory.mktemp("overfit"), torch.device("cpu")), root


def train_args(demo: Path, project: Path, epochs: int) -> list[str]:
    """`fcos train` arguments (without `fcos`) of a tiny run PROJECT/run on demo data, no loader workers."""
    return ["train", "--data", str(demo / "train.json"), "--val-data", str(demo / "val.json"),
            "--no-pretrained", "--backbone", "test_resnet", "--img-size", "128", "--fpn-channels", "32", "--head-convs", "2",
            "--size-ranges", "32,64,128,256", "--optimizer", "adamw", "--lr", "0.003", "--warmup-steps", "2",
            "--epochs", str(epochs), "--batch-size", "2", "--workers", "0", "--project", str(project),
            "--name", "run"]


def start_fcos(args: list[str], **env: str) -> subprocess.Popen:
    """`python -m fcos_cli ARGS` in a subprocess with pipes (`env` added to the environment)."""
    return subprocess.Popen([sys.executable, "-m", "fcos_cli", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"training ended before {path.name} appeared: {process.communicate()}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path)[0].state_dict()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def epochs_in(run: Path) -> list[int]:
    """The epochs metrics.csv of a run folder records."""
    with open(run / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]
