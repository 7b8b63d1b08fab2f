"""Backbone: stride 8/16/32 levels picked from timm feature_info, NCHW out, clear errors, local weights."""

from __future__ import annotations

import os
import re

import pytest
import timm
import torch
from safetensors.torch import save_file

from fcos_cli.errors import UserError
from fcos_cli.model import Backbone

H, W = 64, 96  # multiples of 32: every level divides exactly


def _ints(text: str) -> set[int]:
    return {int(v) for v in re.findall(r"\d+", text)}


def _timm_channels_at(name: str, strides: tuple[int, ...]) -> list[int]:
    """Channels of the last timm level at each stride, read from a separately built timm model."""
    info = timm.create_model(name, features_only=True).feature_info
    pairs = list(zip(info.reduction(), info.channels()))
    return [[c for r, c in pairs if r == s][-1] for s in strides]


def test_resnet_levels_channels_and_shapes():
    torch.manual_seed(0)
    backbone = Backbone("test_resnet").eval()
    # test_resnet has 5 timm levels (strides 2..32) whose channels at 8/16/32 are 48/192/96 (not monotonic).
    assert backbone.channels == [48, 192, 96]
    assert backbone.strides == [8, 16, 32]
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, H, W))
    assert len(features) == 3
    assert [tuple(f.shape) for f in features] == [(2, 48, 8, 12), (2, 192, 4, 6), (2, 96, 2, 3)]


@pytest.mark.parametrize("name", ["test_convnext", "test_efficientnet"])
def test_nchw_backbones_pick_strides_8_16_32(name):
    torch.manual_seed(0)
    backbone = Backbone(name).eval()
    assert backbone.strides == [8, 16, 32]
    assert backbone.channels == _timm_channels_at(name, (8, 16, 32))
    assert not backbone.nhwc
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, H, W))
    assert len(features) == 3
    for f, c, s in zip(features, backbone.channels, backbone.strides):
        assert tuple(f.shape) == (2, c, H // s, W // s)


def test_mambaout_nhwc_is_permuted_to_nchw():
    torch.manual_seed(0)
    backbone = Backbone("test_mambaout").eval()
    assert backbone.nhwc
    assert backbone.strides == [8, 16, 32]
    assert backbone.channels == _timm_channels_at("test_mambaout", (8, 16, 32))
    images = torch.rand(2, 3, H, W)
    with torch.no_grad():
        features = backbone(images)
        raw = backbone.body(images)  # timm's own (B, H, W, C) maps
    assert len(features) == 3
    for f, c, s in zip(features, backbone.channels, backbone.strides):
        assert f.shape[1] == c  # channels dim is dim 1
        assert tuple(f.shape) == (2, c, H // s, W // s)
    # The values are timm's maps, permuted (not reshaped).
    for f, i in zip(features, backbone.indices):
        assert raw[i].shape[-1] == f.shape[1]
        assert torch.equal(f, raw[i].permute(0, 3, 1, 2))


def test_custom_strides_pick_matching_levels():
    backbone = Backbone("test_convnext", strides=(4, 8, 16, 32))
    assert backbone.strides == [4, 8, 16, 32]
    assert backbone.channels == _timm_channels_at("test_convnext", (4, 8, 16, 32))
    with torch.no_grad():
        features = backbone.eval()(torch.rand(1, 3, H, W))
    assert [f.shape[-2:] for f in features] == [(H // s, W // s) for s in (4, 8, 16, 32)]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UserError) as info:
        Backbone("resnet5O")
    message = str(info.value)
    assert "resnet5O" in message
    assert "resnet50" in message


def test_missing_stride_names_available_strides():
    with pytest.raises(UserError) as info:
        Backbone("test_resnet", strides=(4, 8, 16, 32, 64))
    message = str(info.value)
    assert {2, 4, 8, 16, 32, 64} <= _ints(message)  # the strides it has, and the one it lacks


def test_single_stride_vit_is_rejected():
    with pytest.raises(UserError) as info:
        Backbone("test_vit")
    message = str(info.value)
    assert "test_vit" in message
    assert {16, 8} <= _ints(message)  # has 16, lacks 8


def test_missing_pretrained_file(tmp_path):
    with pytest.raises(UserError) as info:
        Backbone("test_resnet", pretrained_file=str(tmp_path / "nope.safetensors"))
    assert "nope.safetensors" in str(info.value)


def test_local_pretrained_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    state = timm.create_model("test_resnet").state_dict()
    # Shift every float tensor so that a fresh random init cannot match by chance (or by seed).
    state = {k: (v + 1.5 if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    path = tmp_path / "test_resnet.safetensors"
    save_file(state, str(path))

    torch.manual_seed(2)
    backbone = Backbone("test_resnet", pretrained_file=str(path))
    loaded = backbone.body.state_dict()
    assert len(loaded) > 0
    assert set(loaded) <= set(state)
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key

    # Sanity of the check itself: without the file the weights differ.
    fresh = Backbone("test_resnet").body.state_dict()
    assert not any(torch.equal(fresh[k], state[k]) for k, v in fresh.items() if v.is_floating_point())


def test_pretrained_file_that_is_not_weights(tmp_path):
    """A corrupt local weights file is the user's mistake: a UserError, not a raw SafetensorError."""
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(UserError) as info:
        Backbone("test_resnet", pretrained_file=str(path))
    assert "corrupt.safetensors" in str(info.value) or "test_resnet" in str(info.value)


def test_pretrained_file_of_another_model(tmp_path):
    """test_convnext weights given for test_resnet: no key fits, which must not pass silently."""
    state = {k: v.contiguous() for k, v in timm.create_model("test_convnext").state_dict().items()}
    path = tmp_path / "convnext.safetensors"
    save_file(state, str(path))
    with pytest.raises(UserError):
        Backbone("test_resnet", pretrained_file=str(path))


def test_pretrained_without_file_needs_no_network(monkeypatch):
    """pretrained=True needs `pretrained_file` (no hub download at run time): a UserError, not a hub error."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network here
    with pytest.raises(UserError):
        Backbone("test_resnet", pretrained=True)
