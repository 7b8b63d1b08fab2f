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
    assert isinstance(back.data.multi_scale, tuple)
    cfg.targets.size_ranges = (32, 64, 128, 256)
    assert isinstance(_json_round_trip(cfg).targets.size_ranges, tuple)


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


# ---- one assembly: preset < size profile < weights < config file < --set < flags --------------------------------


def test_assembly_precedence_later_wins(tmp_path):
    from fcos_cli.config import assemble

    weights = preset("improved")
    weights.model.fpn.out_channels, weights.data.img_size, weights.model.backbone.freeze_bn = 96, 448, False
    file = tmp_path / "run.yaml"
    file.write_text("model:\n  fpn:\n    out_channels: 112\ntrain:\n  epochs: 7\n  lr: 0.02\n")

    def lr_epochs_width(**kwargs):
        cfg = assemble("paper", **kwargs)
        return cfg.preset, cfg.model.backbone.name, cfg.model.fpn.out_channels, cfg.data.img_size, cfg.train.epochs

    data = {"data.train": "mine.json"}
    assert lr_epochs_width(flags=data) == ("paper", "resnet50", 256, 640, 12)  # the preset
    assert lr_epochs_width(size="s", flags=data) == ("paper", "resnet18", 128, 512, 24)  # < profile
    assert lr_epochs_width(size="s", weights=weights, flags=data)[2:4] == (96, 448)  # < weights
    assert lr_epochs_width(size="s", weights=weights, files=[file], flags=data)[2:] == (112, 448, 7)  # < file
    sets = ["model.fpn.out_channels=128", "train.epochs=9"]
    assert lr_epochs_width(size="s", weights=weights, files=[file], sets=sets, flags=data)[2:] == (128, 448, 9)
    flags = {**data, "train.epochs": 3}
    assert lr_epochs_width(size="s", weights=weights, files=[file], sets=sets, flags=flags)[4] == 3  # < flags
    tuned = assemble(weights=weights, flags=data)
    assert tuned.model.backbone.freeze_bn is None  # fine-tuning trained weights: back to the recipe's rule


def test_demo_data_takes_the_cpu_profile_and_rules_fill_the_rest():
    from fcos_cli.config import SIZES, assemble, resolve

    cfg = resolve(assemble())
    assert (cfg.model.backbone.name, cfg.data.img_size, cfg.train.epochs) == (SIZES["n"][0], 320, 32)
    assert cfg.targets.size_ranges == (32.0, 64.0, 128.0, 256.0)  # the demo's: 4 strides of P3..P6
    assert cfg.model.backbone.pretrained is False and cfg.model.head.num_groups == 32
    mine = resolve(assemble(flags={"data.train": "mine.json", "model.fpn.out_channels": 32, "data.img_size": 1333}))
    assert mine.targets.size_ranges == (64.0, 128.0, 256.0, 512.0) and mine.model.head.num_groups == 16
    small = resolve(assemble(flags={"data.train": "mine.json", "data.img_size": 160}))
    assert small.targets.size_ranges == (64.0, 128.0, 256.0, 512.0)  # 8 strides at any image size
    finer = resolve(assemble(flags={"data.train": "mine.json", "model.fpn.levels": (2, 3, 4, 5, 6)}))
    assert finer.targets.size_ranges == (32.0, 64.0, 128.0, 256.0)  # the rule follows the levels' strides
    assert mine.model.backbone.pretrained is True and mine.train.lr == 0.01


def test_every_field_is_reachable_by_set_and_mistakes_name_the_key():
    from fcos_cli.config import FCOSConfig, assemble, config_keys, set_value

    cfg = FCOSConfig()
    for key in config_keys():  # each key accepts its own default back
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        set_value(cfg, key, list(value) if isinstance(value, tuple) else value)
    assert len(config_keys()) > 60
    assert assemble(sets=["loss.focal_gamma=1.5", "post.nms_iou=0.5", "data.hflip=0"]).loss.focal_gamma == 1.5
    for text, words in [("train.weight_dacay=1", ["train.weight_dacay", "did you mean train.weight_decay"]),
                        ("train.optimizer=adam", ["train.optimizer", "sgd, adamw"]),
                        ("model.fpn.out_channels=wide", ["model.fpn.out_channels", "expected int"]),
                        ("train.amp=maybe", ["train.amp", "expected bool"]),
                        ("lr=0.1", ["lr", "does not exist"])]:
        with pytest.raises(UserError) as info:
            assemble(sets=[text])
        assert all(w in str(info.value) for w in words), (text, str(info.value))


def test_cli_and_python_api_assemble_the_same_config(monkeypatch, tmp_path):
    """`fcos train OPTIONS` and `assemble(...)` with the same intent give identical config dicts."""
    from typer.testing import CliRunner

    import fcos_cli.cli as cli
    from fcos_cli.config import assemble

    seen = {}
    monkeypatch.setattr(cli, "_train", lambda cfg, *args: seen.setdefault("cfg", cfg))
    file = tmp_path / "run.json"
    file.write_text(json.dumps({"loss": {"focal_alpha": 0.3}}))
    args = ["train", "--data", "mine.json", "--size", "s", "--config", str(file), "--set", "data.hflip=0.0",
            "--epochs", "5", "--optimizer", "sgd", "--size-ranges", "32,64,128,256", "--no-pretrained", "--amp"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    api = assemble("improved", "s", None, [file], ["data.hflip=0.0"],
                   {"data.train": "mine.json", "train.epochs": 5, "train.optimizer": "sgd",
                    "targets.size_ranges": "32,64,128,256", "model.backbone.pretrained": False, "train.amp": True})
    assert to_dict(seen["cfg"]) == to_dict(api)


def test_config_command_output_round_trips_through_train_config(tmp_path):
    from typer.testing import CliRunner

    from fcos_cli.cli import app
    from fcos_cli.config import assemble, load_config

    result = CliRunner().invoke(app, ["config", "--preset", "paper", "--size", "l"])
    assert result.exit_code == 0
    (tmp_path / "run.json").write_text(result.stdout)
    assert load_config(tmp_path / "run.json").model == assemble("paper", "l").model
    assert to_dict(assemble(files=[tmp_path / "run.json"], flags={"data.train": "x.json"})) == \
        to_dict(assemble("paper", "l", flags={"data.train": "x.json"}))
