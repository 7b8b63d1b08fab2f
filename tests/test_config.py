"""Config: JSON round trips of every preset, strict from_dict, preset differences, load_config errors."""

from __future__ import annotations

import json

import pytest

from fcos_cli.config import CONFIG_VERSION, FCOSConfig, from_dict, load_config, preset, to_dict
from fcos_cli.errors import UserError


def _json_round_trip(cfg: FCOSConfig) -> FCOSConfig:
    return from_dict(json.loads(json.dumps(to_dict(cfg))))


@pytest.mark.parametrize("name", ["paper", "improved", "torchvision"])
def test_preset_json_round_trip(name):
    cfg = preset(name)
    back = _json_round_trip(cfg)
    assert back == cfg
    assert back.preset == name
    # JSON turns tuples into lists; they must come back as tuples.
    assert isinstance(back.model.fpn.levels, tuple)
    assert isinstance(back.targets.size_ranges, tuple)
    assert isinstance(back.data.multi_scale, tuple)


def test_round_trip_of_changed_values(tmp_path):
    cfg = preset("improved")
    cfg.model.num_classes = 7
    cfg.model.backbone.name = "convnext_tiny"
    cfg.model.backbone.pretrained_file = "weights/convnext.safetensors"
    cfg.model.fpn.levels = (3, 4, 5)
    cfg.model.fpn.extra_from = "c5"
    cfg.targets.size_ranges = (32.0, 96.5)
    cfg.data.multi_scale = (480, 512, 640)
    cfg.data.val = None
    cfg.train.optimizer = "adamw"
    back = _json_round_trip(cfg)
    assert back == cfg
    assert back.data.multi_scale == (480, 512, 640)
    assert back.model.fpn.levels == (3, 4, 5)
    assert back != preset("improved")  # the comparison sees the changes

    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(to_dict(cfg)))
    assert load_config(path) == cfg


def test_from_dict_rejects_unknown_keys_by_name():
    data = to_dict(preset("improved"))
    data["model"]["fpn"]["out_chanels"] = 128
    with pytest.raises(UserError) as info:
        from_dict(data)
    assert "out_chanels" in str(info.value)

    data = to_dict(preset("improved"))
    data["colour"] = "red"
    data["zzz_extra"] = 1
    with pytest.raises(UserError) as info:
        from_dict(data)
    assert "colour" in str(info.value) and "zzz_extra" in str(info.value)


@pytest.mark.parametrize(("section", "key", "value"), [
    ("model.head", "norm", "batch"),
    ("model.head", "box_activation", "sigmoid"),
    ("loss", "box_loss", "l1"),
    ("targets", "point_spacing", "pixels"),
    ("post", "threshold_on", "CLS"),
])
def test_from_dict_rejects_invalid_literal(section, key, value):
    data = to_dict(preset("improved"))
    node = data
    for part in section.split("."):
        node = node[part]
    node[key] = value
    with pytest.raises(UserError) as info:
        from_dict(data)
    assert repr(value) in str(info.value) or value in str(info.value)


def test_from_dict_rejects_non_mapping_section():
    data = to_dict(preset("improved"))
    data["model"] = 5
    with pytest.raises(UserError):
        from_dict(data)


@pytest.mark.parametrize("version", [CONFIG_VERSION + 1, 0, "1"])
def test_from_dict_rejects_wrong_version(version):
    data = to_dict(preset("improved"))
    data["version"] = version
    with pytest.raises(UserError) as info:
        from_dict(data)
    assert "version" in str(info.value)


def test_unknown_preset():
    with pytest.raises(UserError) as info:
        preset("nope")
    message = str(info.value)
    assert "nope" in message
    assert all(name in message for name in ("paper", "improved", "torchvision"))


def test_presets_are_fresh_objects():
    a = preset("improved")
    a.model.fpn.out_channels = 8
    assert preset("improved").model.fpn.out_channels != 8


def test_paper_preset_fields():
    paper, improved = preset("paper"), preset("improved")
    assert paper.targets.center_sampling_radius == 0
    assert paper.loss.box_loss == "iou"
    assert paper.model.head.box_activation == "exp"
    assert paper.model.head.centerness_on_reg is False
    # ... and the improved preset differs in each of them.
    assert improved.targets.center_sampling_radius > 0
    assert improved.loss.box_loss == "giou"
    assert improved.model.head.box_activation == "relu"
    assert improved.model.head.centerness_on_reg is True


def test_torchvision_preset_fields():
    tv, improved = preset("torchvision"), preset("improved")
    assert tv.targets.point_offset == 0
    assert tv.targets.point_spacing == "torchvision"
    assert tv.targets.inclusive_size_ranges is False
    assert tv.model.head.learnable_scale is False
    assert tv.post.score_thresh == pytest.approx(0.2)
    assert tv.post.threshold_on == "score"
    assert improved.targets.point_offset == pytest.approx(0.5)
    assert improved.targets.point_spacing == "stride"
    assert improved.targets.inclusive_size_ranges is True
    assert improved.model.head.learnable_scale is True
    assert improved.post.threshold_on == "cls"


def test_load_config_broken_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"model": {"num_classes": 3,')
    with pytest.raises(UserError) as info:
        load_config(path)
    assert "broken.json" in str(info.value)


def test_load_config_missing_file(tmp_path):
    with pytest.raises(UserError):
        load_config(tmp_path / "absent.json")


@pytest.mark.parametrize("text", ["[1, 2]", '"improved"', "3"])
def test_load_config_json_that_is_not_an_object(tmp_path, text):
    path = tmp_path / "not_object.json"
    path.write_text(text)
    with pytest.raises(UserError):
        load_config(path)
