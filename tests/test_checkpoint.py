"""Checkpoint: safetensors round trip without pickle, channels_last, clear errors, atomic writes."""

from __future__ import annotations

import copy
import functools
import os

import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

from fcos_cli import checkpoint
from fcos_cli.config import preset
from fcos_cli.errors import UserError
from fcos_cli.metadata import WeightsInfo
from fcos_cli.model import build_model

CLASSES = ["cat", "dog", "bird"]


def _small(fpn_channels: int = 32):
    """A fresh copy of a small trained-looking model and its config (built once per width)."""
    model, cfg = _build(fpn_channels)
    return copy.deepcopy(model), copy.deepcopy(cfg)


@functools.lru_cache(maxsize=None)
def _build(fpn_channels: int):
    torch.manual_seed(0)
    cfg = preset("improved")
    cfg.model.num_classes = len(CLASSES)
    cfg.model.backbone.name = "test_resnet"
    cfg.model.fpn.out_channels = fpn_channels
    cfg.model.head.num_groups = 8
    model = build_model(cfg.model)
    # Move BatchNorm running stats and every weight away from their init so the file must carry them.
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 64))
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval(), cfg


def _outputs(model, images):
    with torch.no_grad():
        return model(images)


def _assert_same_outputs(a, b):
    for maps_a, maps_b in zip(a, b, strict=True):
        assert len(maps_a) == len(maps_b)
        for x, y in zip(maps_a, maps_b, strict=True):
            assert torch.equal(x, y)


@pytest.fixture
def images():
    torch.manual_seed(123)
    return torch.rand(1, 3, 70, 90)


def test_round_trip(tmp_path, images):
    model, cfg = _small()
    path = checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, CLASSES))
    assert path == tmp_path / "w.safetensors" and path.is_file()
    loaded, cfg2, names = checkpoint.load(path)
    assert not loaded.training
    assert cfg2 == cfg
    assert names == CLASSES
    _assert_same_outputs(_outputs(model, images), _outputs(loaded, images))

    # Sanity of the comparison: a fresh model of the same config gives other outputs.
    other, _ = _small()
    with torch.no_grad():
        other.head.cls_logits.bias.add_(1.0)
    assert not torch.equal(_outputs(other, images).cls_logits[0], _outputs(loaded, images).cls_logits[0])


def test_read_info(tmp_path):
    model, cfg = _small()
    info = WeightsInfo(cfg, CLASSES, [5, 7, 9], epoch=3, step=12, checkpoint_id="3-12-abc")
    path = checkpoint.save(tmp_path / "w.safetensors", model, info)
    assert checkpoint.read_info(path) == info


def test_load_does_not_unpickle(tmp_path, images, monkeypatch):
    model, cfg = _small()
    path = checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, CLASSES))

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling is not allowed when loading weights")

    monkeypatch.setattr("pickle.loads", refuse)
    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded, _, names = checkpoint.load(path)
    assert names == CLASSES
    _assert_same_outputs(_outputs(model, images), _outputs(loaded, images))


def test_save_channels_last_model(tmp_path, images):
    model, cfg = _small()
    reference = _outputs(model, images)
    model = model.to(memory_format=torch.channels_last)
    assert any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters())
    path = checkpoint.save(tmp_path / "cl.safetensors", model, WeightsInfo(cfg, CLASSES))
    loaded, _, _ = checkpoint.load(path)
    for a, b in zip(reference, _outputs(loaded, images), strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_class_name_count_must_match(tmp_path):
    model, cfg = _small()
    with pytest.raises(ValueError):
        checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, ["only-one"]))
    assert not (tmp_path / "w.safetensors").exists()


def test_truncated_file(tmp_path):
    model, cfg = _small()
    path = checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, CLASSES))
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as info:
        checkpoint.load(truncated)
    assert "truncated.safetensors" in str(info.value)


def test_random_bytes(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(UserError):
        checkpoint.load(path)


def test_torch_pickle_file(tmp_path):
    model, _ = _small()
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(UserError):
        checkpoint.load(path)


def test_safetensors_without_our_metadata(tmp_path):
    model, _ = _small()
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(UserError) as info:
        checkpoint.load(path)
    assert "metadata" in str(info.value)


def test_metadata_with_foreign_weights(tmp_path):
    """Our metadata, but tensors that are not this model's: a UserError, not a load_state_dict crash."""
    _, cfg = _small()
    metadata = WeightsInfo(cfg, CLASSES).to_metadata()
    path = tmp_path / "foreign.safetensors"
    save_file({"something.else": torch.zeros(3)}, str(path), metadata=metadata)
    with pytest.raises(UserError):
        checkpoint.load(path)


def test_metadata_of_another_width(tmp_path):
    """Weights of a 64-channel FPN under metadata that says 32: same keys, other shapes."""
    model64, _ = _small(fpn_channels=64)
    _, cfg32 = _small(fpn_channels=32)
    path = tmp_path / "mismatch.safetensors"
    tensors = {k: v.contiguous().clone() for k, v in model64.state_dict().items()}
    metadata = WeightsInfo(cfg32, CLASSES).to_metadata()
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(UserError):
        checkpoint.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as info:
        checkpoint.load(tmp_path / "absent.safetensors")
    assert "absent.safetensors" in str(info.value)
    with pytest.raises(UserError):
        checkpoint.read_info(tmp_path / "absent.safetensors")


def test_directory_is_not_a_weights_file(tmp_path):
    with pytest.raises(UserError):
        checkpoint.load(tmp_path)


def test_save_leaves_no_temporary_file(tmp_path):
    model, cfg = _small()
    checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, CLASSES))
    checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, CLASSES))  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_failed_save_keeps_existing_file(tmp_path, monkeypatch, images):
    model, cfg = _small()
    path = checkpoint.save(tmp_path / "w.safetensors", model, WeightsInfo(cfg, CLASSES))
    before = path.read_bytes()

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as f:  # a partial write, then the disk fills up
            f.write(b"\x00" * 100)
        raise OSError("No space left on device")

    # checkpoint imports save_file by name; patch both the library's and safetensors' binding.
    monkeypatch.setattr(safetensors.torch, "save_file", crash_midway)
    if hasattr(checkpoint, "save_file"):
        monkeypatch.setattr(checkpoint, "save_file", crash_midway)
    other, _ = _small(fpn_channels=32)
    with torch.no_grad():
        other.head.cls_logits.bias.add_(1.0)
    with pytest.raises(OSError):
        checkpoint.save(path, other, WeightsInfo(cfg, CLASSES))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # the partial temporary file is gone
    monkeypatch.undo()
    loaded, _, _ = checkpoint.load(path)
    _assert_same_outputs(_outputs(model, images), _outputs(loaded, images))
