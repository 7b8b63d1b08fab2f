"""`benchmarks/run.py`, `e2e.py` and `accuracy.py` in their --quick form (and `batch_composition.py`) run end to end and write every row; timings are
never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
E2E = SCRIPT.with_name("e2e.py")
ROWS = ["infer_512", "infer_800", "infer_800_bf16", "infer_800_default", "train_step", "train_step_bf16",
        "train_step_ckpt", "assign", "postprocess"]


def test_quick_run_writes_all_keys(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "cpu.json").read_text())
    for key in ROWS:
        row = results[key]
        assert row["ours_ms"] > 0 and row["torchvision_ms"] > 0
        assert abs(row["ratio"] - row["ours_ms"] / row["torchvision_ms"]) < 0.05 * row["ratio"]
    for key in ("train_peak_mem_mb", "train_peak_mem_mb_large", "train_peak_mem_mb_ckpt"):
        memory = results[key]
        assert memory["ours"] > 0 and memory["torchvision"] > 0 and memory["ratio"] > 0, key
    assert "predict_e2e" not in results  # --quick leaves e2e.py to its own test
    assert 0 < results["postprocess_share"] < 1
    profile = results["train_step_profile"]
    assert 0 < profile["ours_conv_ms"] and 0 < profile["torchvision_conv_ms"] and 0 < profile["conv_floor_ratio"]
    assert results["max_score_difference"] < 1e-3  # same weights, same input: the same detections
    assert "ratio" in done.stdout and "infer_800_default" in done.stdout


def test_e2e_quick_writes_its_rows_next_to_the_others(tmp_path: Path) -> None:
    (tmp_path / "cpu.json").write_text(json.dumps({"infer_800": {"ratio": 0.75}}))  # rows of run.py stay
    done = subprocess.run([sys.executable, str(E2E), "--quick", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "cpu.json").read_text())
    assert results["infer_800"] == {"ratio": 0.75}
    predict = results["predict_e2e"]
    assert predict["ours_images_per_s"] > 0 and predict["torchvision_images_per_s"] > 0 and predict["ratio"] > 0
    # The raised class bias gives detections to draw, and both sides draw about as many (the same weights).
    assert predict["detections_per_image"]["ours"] > 10 and predict["detections_per_image"]["torchvision"] > 10
    for key in ("train_e2e", "train_e2e_amp"):
        assert results[key]["ours_images_per_s"] > 0 and results[key]["torchvision_images_per_s"] > 0
    for row in results["loader"].values():
        assert {"workers_0", "workers_1", "model_step"} <= row.keys() and all(v > 0 for v in row.values())
    for row in results["jpeg_readers"].values():
        assert row["fastest"] in ("pil", "fcos_cli_read_image", "torchvision_decode_jpeg", "opencv_imdecode")
    assert "predict_e2e" in done.stdout and "jpeg_readers" in done.stdout


ACCURACY = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"


def test_accuracy_quick_trains_both_and_scores_them_alike(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ACCURACY), "--quick", "--device", "cpu", "--workers", "0",
                           "--variant", "wide=--fpn-channels 128", "--skip", "wide",
                           "--work", str(tmp_path / "work"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "accuracy_cpu.json").read_text())
    assert set(result["runs"]) == {"torchvision", "ours_same"} == set(result["commands"]) | {"torchvision"}
    for key, runs in result["runs"].items():
        assert [r["seed"] for r in runs] == [0]
        assert 0 <= runs[0]["map"] <= runs[0]["map50"] <= 1 and runs[0]["wall_s"] > 0, key
        assert 0 <= runs[0]["map_batch8"] <= 1, key
    assert "--set data.hflip=0" in result["commands"]["ours_same"]
    val = json.loads((tmp_path / "work" / "digits_8_4_96" / "val.json").read_text())
    assert len(val["images"]) == 4 and val["annotations"]  # real digit scans, with boxes
    assert "ours_same" in done.stdout and "torchvision" in done.stdout


def test_accuracy_skip_of_an_unknown_run_names_the_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ACCURACY), "--quick", "--skip", "ours_defualt",
                           "--work", str(tmp_path), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --skip ours_defualt: no such run of ours (runs: ours_same)"
    assert not list(tmp_path.glob("*.json"))


def test_batch_composition_scores_one_weights_file_four_ways(overfit) -> None:
    result, root = overfit
    done = subprocess.run([sys.executable, str(SCRIPT.with_name("batch_composition.py")), str(result.best),
                           str(root / "train.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(scores) == {"alone", "batch8", "batch8_by_orientation", "alone_padded"}
    assert all(0 <= v <= 1 for v in scores.values())
    assert scores["batch8"] > 0.5  # the overfit model scored in batches, as `fcos eval` scores it
