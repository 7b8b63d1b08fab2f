"""The head's contract: per-class sigmoid logits at the focal prior, positive (l, t, r, b) as exp(s_i x) or relu,
one learnable scale per level, center-ness on the branch the config names, towers shared by every level."""

from __future__ import annotations

import math

import pytest
import torch

from fcos_cli.model.head import FCOSHead


def _levels(channels: int = 16) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(2, channels, s, s + 1) for s in (8, 4, 2)]


def test_shapes_and_focal_prior() -> None:
    head = FCOSHead(16, num_classes=5, num_levels=3, num_convs=2, num_groups=4).eval()
    with torch.no_grad():
        out = head(_levels())
    for level, size in enumerate((8, 4, 2)):
        assert out.cls_logits[level].shape == (2, 5, size, size + 1)  # K sigmoids, no background column
        assert out.box_regression[level].shape == (2, 4, size, size + 1)
        assert out.centerness[level].shape == (2, 1, size, size + 1)
    probability = torch.sigmoid(torch.cat([c.flatten() for c in out.cls_logits]))
    assert probability.mean().item() == pytest.approx(0.01, abs=2e-3)  # RetinaNet's prior: -log((1-p)/p)
    assert head.cls_logits.bias[0].item() == pytest.approx(-math.log(99))


@pytest.mark.parametrize("activation", ["exp", "relu"])
def test_each_level_scales_its_own_distances(activation: str) -> None:
    head = FCOSHead(16, 3, num_levels=3, num_convs=1, num_groups=4, box_activation=activation).eval()
    features = _levels()
    with torch.no_grad():
        before = head(features).box_regression
        head.scales[1].scale.fill_(2.0)
        after = head(features).box_regression
    assert all((b >= 0).all() for b in before)
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[2], before[2])
    # exp(2x) = exp(x)^2 ; relu(2x) = 2 relu(x)
    torch.testing.assert_close(after[1], before[1] ** 2 if activation == "exp" else before[1] * 2)


@pytest.mark.parametrize("on_reg", [True, False])
def test_centerness_reads_the_tower_the_config_names(on_reg: bool) -> None:
    head = FCOSHead(16, 3, num_levels=3, num_convs=1, num_groups=4, centerness_on_reg=on_reg).eval()
    features = _levels()
    with torch.no_grad():
        before = head(features)
        head.cls_tower[0].weight.add_(0.5)  # disturb the classification tower only
        after = head(features)
    assert not torch.allclose(after.cls_logits[0], before.cls_logits[0])
    torch.testing.assert_close(after.box_regression[0], before.box_regression[0])
    assert torch.allclose(after.centerness[0], before.centerness[0]) == on_reg


def test_towers_are_shared_and_group_normed() -> None:
    head = FCOSHead(16, 3, num_levels=5, num_convs=4, num_groups=8)
    norms = [m for m in head.cls_tower if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 4 and {n.num_groups for n in norms} == {8}
    assert len(head.scales) == 5 and FCOSHead(16, 3, 5, learnable_scale=False, num_groups=8).scales is None
    assert sum(p.numel() for p in head.parameters()) == sum(  # one set of weights for every level
        p.numel() for p in FCOSHead(16, 3, num_levels=1, num_convs=4, num_groups=8).parameters()) + 4
