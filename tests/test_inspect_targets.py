"""inspect-targets: hand-computed explanations with reason codes, BPR, and the command's files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from fcos_cli.cli import app
from fcos_cli.config import TargetsConfig
from fcos_cli.inspect_targets import explain_image, feature_sizes, summarize
from fcos_cli.targets import make_points

POINTS = make_points(((8, 8), (4, 4)), (8, 16))  # 64x64 image: P3 at 4, 12, ..., 60; P4 at 8, 24, 40, 56
CFG = TargetsConfig(size_ranges=(32,), center_sampling_radius=0.0)
A = [0.0, 0.0, 40.0, 40.0]  # box 0, area 1600
B = [0.0, 0.0, 64.0, 64.0]  # box 1, area 4096


def _explain(boxes, cfg=CFG, labels=None):
    boxes = torch.tensor(boxes)
    labels = torch.tensor(labels or [0] * len(boxes))
    return explain_image("hand.png", POINTS, boxes, labels, 2, cfg)


def test_hand_computed_levels_winner_and_reasons() -> None:
    ex = _explain([A, B], labels=[0, 1])
    # A on P3: max(l,t,r,b) <= 32 needs 8 <= x <= 32, so x, y in {12, 20, 28}: 9 points. On P4 the points
    # (8,8), (8,24), (24,8) have max 32 (inclusive); (24,24) has 24 < 32.
    # B never fits P3 (a point would need x = 32 exactly); on P4 all 16 points fit, 3 of them go to A.
    assert ex.boxes[0]["positives"] == 12 and ex.boxes[0]["levels"] == {"P3": 9, "P4": 3}
    assert ex.boxes[1]["positives"] == 13 and ex.boxes[1]["levels"] == {"P4": 13}
    taken = [r for r in ex.rejected if r["box"] == 1 and r["reason"] == "taken_by_smaller_box"]
    assert sorted((r["x"], r["y"]) for r in taken) == [(8, 8), (8, 24), (24, 8)] and {r["taken_by"] for r in taken} == {0}
    b_p3 = [r for r in ex.rejected if r["box"] == 1 and r["level"] == 3]
    assert len(b_p3) == 64 and {r["reason"] for r in b_p3} == {"size_out_of_range"}
    a_rejected = [r for r in ex.rejected if r["box"] == 0]
    assert len(a_rejected) == 16 + 1 and {r["reason"] for r in a_rejected} == {"size_out_of_range"}
    assert int(ex.ambiguous.sum()) == 3  # the three contested P4 points
    first = next(p for p in ex.positives if p["level"] == 4 and p["box"] == 0 and (p["x"], p["y"]) == (8, 24))
    assert (first["l"], first["t"], first["r"], first["b"]) == (8, 24, 32, 16)
    assert first["centerness"] == round((8 / 32 * 16 / 24) ** 0.5, 4)


def test_center_sampling_reason() -> None:
    ex = _explain([B], TargetsConfig(size_ranges=(32,), center_sampling_radius=1.0))
    # Radius 1 stride around (32, 32): on P4 |x - 32| < 16 keeps x in {24, 40}, 4 positives and 12 points
    # outside; on P3 |x - 32| < 8 keeps x in {28, 36}, 4 points in the region but with max(l,t,r,b) = 36 > 32.
    assert ex.boxes[0]["levels"] == {"P4": 4}
    reasons = [r["reason"] for r in ex.rejected]
    assert reasons.count("outside_center_region") == 60 + 12 and reasons.count("size_out_of_range") == 4


def test_best_possible_recall() -> None:
    assert summarize([_explain([A, B])], [3, 4])["bpr"] == 1.0
    # A 6 px bar between the P3 points at x = 4 and 12 (and too small for P4) holds no point: lost.
    lost = summarize([_explain([A, B, [5.0, 10.0, 11.0, 50.0]])], [3, 4])
    assert lost["bpr"] == 2 / 3 and lost["boxes_without_positives"] == 1


def test_feature_sizes_match_the_model_padding() -> None:
    assert feature_sizes(517, 731, [8, 16, 32, 64, 128]) == ((68, 92), (34, 46), (17, 23), (9, 12), (5, 6))


def test_command_writes_overlays_tables_and_stats(tmp_path: Path) -> None:
    from fcos_cli.data.synthetic import write_demo_data

    root = write_demo_data(tmp_path / "data", num_train=2, num_val=1, max_side=320, seed=7)
    result = CliRunner().invoke(app, ["inspect-targets", "--data", str(root / "train.json"), "--img-size", "320",
                                      "--num-images", "2", "--project", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "exp"
    assert len(list(out.glob("*_P[3-7].png"))) == 2 * 5
    tables = json.loads((out / "assignments.json").read_text())
    assert set(tables) == {"positives", "boxes", "rejected"} and tables["boxes"]
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats) == {"chosen", "center sampling off", "center sampling 1.5", "no level ranges"}
    assert stats["center sampling off"]["positives"] > stats["chosen"]["positives"]
    assert "best possible" in result.output
