"""torchrun on CPU (gloo): two ranks split every epoch, end with the same weights, and one run folder is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from fcos_cli import checkpoint
from fcos_cli.data import open_split
from fcos_cli.data.synthetic import write_demo_data

HOOKED = str(Path(__file__).parents[1] / "hooked_fcos.py")  # fcos, each rank logging its images and weights


def _rank_log(path: Path) -> tuple[dict[str, torch.Tensor], dict[int, list[int]]]:
    with safe_open(str(path), framework="pt") as f:
        seen = json.loads(f.metadata()["images_seen"])
        return {k: f.get_tensor(k) for k in f.keys()}, {int(k): v for k, v in seen.items()}


def test_two_ranks_share_epochs_and_weights(tmp_path: Path) -> None:
    demo = write_demo_data(tmp_path / "demo", num_train=8, num_val=2, max_side=128, seed=5)
    project, logs = tmp_path / "runs", tmp_path / "ranks"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", HOOKED, "train", "--data", str(demo / "train.json"), "--val-data", str(demo / "val.json"),
               "--no-pretrained", "--backbone", "test_resnet", "--img-size", "128", "--fpn-channels", "32", "--head-convs", "2",
               "--size-ranges", "32,64,128,256", "--optimizer", "adamw", "--lr", "0.003", "--warmup-steps", "2",
               "--epochs", "2", "--batch-size", "2", "--workers", "0", "--project", str(project), "--name", "run"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=55,
                          env={**os.environ, "FCOS_CLI_TEST_RANK_LOG": str(logs)})
    assert done.returncode == 0, done.stderr[-3000:]

    weights0, seen0 = _rank_log(logs / "rank0.safetensors")
    weights1, seen1 = _rank_log(logs / "rank1.safetensors")
    model = checkpoint.load(project / "run" / "last.safetensors")[0]
    parameters = [name for name, _ in model.named_parameters()]
    # Parameters agree bit for bit; BatchNorm running statistics are each rank's own (DDP broadcasts
    # rank 0's before every forward, then each rank updates them on its own images).
    assert parameters and all(torch.equal(weights0[k], weights1[k]) for k in parameters)
    assert all(torch.equal(weights0[k], model.state_dict()[k]) for k in parameters)

    all_ids = sorted(r.image_id for r in open_split(demo / "train.json").records)
    assert sorted(seen0) == sorted(seen1) == [1, 2]
    for epoch in (1, 2):
        assert not set(seen0[epoch]) & set(seen1[epoch])  # disjoint shares
        assert sorted(seen0[epoch] + seen1[epoch]) == all_ids  # together: the whole epoch
    assert seen0[1] != seen0[2]  # reshuffled per epoch

    assert [p.name for p in project.iterdir()] == ["run"]  # one run folder, written by rank 0 alone
    assert {"last.safetensors", "best.safetensors", "metrics.csv"} <= {p.name for p in (project / "run").iterdir()}
    with open(project / "run" / "metrics.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["1", "2"]


def test_two_ranks_evaluate_like_one_process(tmp_path: Path) -> None:
    """`torchrun ... fcos_cli eval`: each rank predicts its share (5 images: 3 and 2), rank 0 scores all of them."""
    from fcos_cli.model import build_model
    from tests.conftest import tiny_config

    demo = write_demo_data(tmp_path / "demo", num_train=1, num_val=5, max_side=128, seed=3)
    cfg = tiny_config(epochs=1)
    cfg.model.num_classes, cfg.post.score_thresh = 3, 0.0  # random weights: keep their (many) low scores
    torch.manual_seed(0)
    weights = checkpoint.save(tmp_path / "w.safetensors", build_model(cfg.model), cfg,
                              ["ellipse", "rectangle", "triangle"])
    args = ["-m", "fcos_cli", "eval", "-w", str(weights), "--data", str(demo / "val.json"), "--device", "cpu",
            "--fp32", "--batch-size", "1", "--project", str(tmp_path / "runs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as torchrun sets it: the same float sums in both runs
    one = subprocess.run([sys.executable, *args, "--name", "one"], capture_output=True, text=True, timeout=50, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args,
                          "--name", "two"], capture_output=True, text=True, timeout=50, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stdout and two.stdout.count("COCO metrics") == 1  # rank 0 alone prints
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["one", "two"]
    results = [json.loads((tmp_path / "runs" / n / "results.json").read_text()) for n in ("one", "two")]
    assert len(results[0]) == 5 * cfg.post.max_detections and results[0] == results[1]
    metrics = [json.loads((tmp_path / "runs" / n / "metrics.json").read_text()) for n in ("one", "two")]
    assert metrics[0] == metrics[1]
