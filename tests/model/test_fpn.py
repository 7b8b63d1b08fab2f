"""The feature pyramid computed by hand from its own weights: top-down sums, P6 from P5 (or C5), P7 from ReLU(P6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fcos_cli.model.fpn import FPN


def _features() -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(2, 8, 16, 20), torch.randn(2, 16, 8, 10), torch.randn(2, 32, 4, 5)]  # C3, C4, C5


@pytest.mark.parametrize("extra_from", ["p5", "c5"])
def test_levels_equal_the_paper_recipe_by_hand(extra_from: str) -> None:
    fpn = FPN([8, 16, 32], out_channels=12, num_extra=2, extra_from=extra_from).eval()
    c3, c4, c5 = _features()
    with torch.no_grad():
        out = fpn([c3, c4, c5])
        inner5 = fpn.lateral[2](c5)
        inner4 = fpn.lateral[1](c4) + inner5.repeat_interleave(2, 2).repeat_interleave(2, 3)  # nearest x2
        inner3 = fpn.lateral[0](c3) + inner4.repeat_interleave(2, 2).repeat_interleave(2, 3)
        p3, p4, p5 = fpn.output[0](inner3), fpn.output[1](inner4), fpn.output[2](inner5)
        p6 = fpn.extra[0](p5 if extra_from == "p5" else c5)
        p7 = fpn.extra[1](F.relu(p6))
    for got, want in zip(out, [p3, p4, p5, p6, p7], strict=True):
        torch.testing.assert_close(got, want)
    assert [tuple(o.shape[-2:]) for o in out] == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]  # strides 8..128
    assert {o.shape[1] for o in out} == {12}


def test_p6_reads_c5_only_when_asked() -> None:
    assert FPN([8, 16, 32], 12, extra_from="p5").extra[0].in_channels == 12
    assert FPN([8, 16, 32], 12, extra_from="c5").extra[0].in_channels == 32
    assert len(FPN([8, 16, 32], 12, num_extra=0).extra) == 0
