"""WeightsInfo / TrainStateInfo: round trips, the keys files already on disk use, clear errors."""

from __future__ import annotations

import json

import onnx
import pytest

from fcos_cli.config import preset, to_dict
from fcos_cli.errors import UserError
from fcos_cli.metadata import TrainStateInfo, WeightsInfo, category_ids_or_default
from fcos_cli.version import __version__

NAMES = ["cat", "dog", "bird"]


def _config():
    cfg = preset("improved")
    cfg.model.num_classes = len(NAMES)
    return cfg


def test_weights_info_round_trip() -> None:
    info = WeightsInfo(_config(), NAMES, [5, 7, 9], imported_from={"file": "x.pth", "complete": True}, epoch=2,
                       step=40, checkpoint_id="2-40-abcd")
    assert WeightsInfo.from_metadata(info.to_metadata(), "w") == info


def test_keys_on_disk_are_the_ones_older_files_use() -> None:
    """A file written before WeightsInfo existed (these exact strings) reads back; new files write the same keys."""
    cfg = _config()
    old = {"fcos_cli.config": json.dumps(to_dict(cfg)), "fcos_cli.class_names": json.dumps(NAMES),
           "fcos_cli.version": "0.0.9", "fcos_cli.category_ids": "[5, 7, 9]", "fcos_cli.epoch": "3",
           "fcos_cli.step": "12", "fcos_cli.checkpoint_id": "3-12-0badcafe",
           "fcos_cli.imported_from": json.dumps({"source": "mmdet"})}
    info = WeightsInfo.from_metadata(old, "old.safetensors")
    assert (info.config, info.class_names, info.category_ids) == (cfg, NAMES, [5, 7, 9])
    assert (info.epoch, info.step, info.checkpoint_id, info.version) == (3, 12, "3-12-0badcafe", "0.0.9")
    assert info.imported_from == {"source": "mmdet"}
    assert info.to_metadata() == {**old, "fcos_cli.version": __version__}


def test_category_ids_default_to_one_to_k() -> None:
    cfg = _config()
    minimal = {"fcos_cli.config": json.dumps(to_dict(cfg)), "fcos_cli.class_names": json.dumps(NAMES)}
    assert WeightsInfo.from_metadata(minimal, "w").category_ids == [1, 2, 3]
    assert WeightsInfo(cfg, NAMES).category_ids == [1, 2, 3]
    assert category_ids_or_default([10, 20], 2) == [10, 20] and category_ids_or_default(None, 2) == [1, 2]


def test_onnx_metadata_round_trip() -> None:
    proto = onnx.ModelProto()
    info = WeightsInfo(_config(), NAMES, [5, 7, 9])
    info.to_onnx(proto)
    assert {p.key for p in proto.metadata_props} >= {"fcos_cli.config", "fcos_cli.class_names"}
    assert WeightsInfo.from_onnx(proto, "m.onnx") == info


@pytest.mark.parametrize("metadata, message", [
    ({}, "has no fcos_cli metadata"),
    ({"fcos_cli.class_names": "[]"}, "has no fcos_cli metadata"),
    ({"fcos_cli.config": "{", "fcos_cli.class_names": "[]"}, "corrupt fcos_cli metadata (fcos_cli.config"),
])
def test_bad_weights_metadata_is_one_user_error(metadata, message) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as info:
        WeightsInfo.from_metadata(metadata, "w.safetensors")
    assert str(info.value).startswith("w.safetensors")


def test_train_state_info_round_trip_and_old_keys() -> None:
    old = {"fcos_cli.train_state": json.dumps({"model": {"w": {"__tensor__": "model.w"}}}), "fcos_cli.epoch": "2",
           "fcos_cli.step": "8", "fcos_cli.best_ap": "0.25", "fcos_cli.checkpoint_id": "2-8-abc",
           "fcos_cli.progress": "{}"}
    info = TrainStateInfo.from_metadata(old, "s")
    assert (info.epoch, info.step, info.best_ap, info.checkpoint_id, info.progress) == (2, 8, 0.25, "2-8-abc", {})
    assert info.to_metadata() == old
    with pytest.raises(UserError, match="not an fcos_cli training state"):
        TrainStateInfo.from_metadata({"fcos_cli.epoch": "2"}, "s")
