"""Shared fixtures: one tiny detector trained (overfitted) on four demo images, reused by several tests."""

from __future__ import annotations

import os
from pathlib import Path

# Tests never touch the network: the Hugging Face hub (timm's pretrained weights) answers from local caches only,
# here and in every `fcos` subprocess. Set before huggingface_hub is imported, which reads it once.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

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
    return train(cfg, index, index, tmp_path_factory.mktemp("overfit"), torch.device("cpu"), progress=False), root
