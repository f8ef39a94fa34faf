"""GroupNorm and ReLU written into their input (rsp_d2/layers/group_norm.py), the RSP head's
Q_l at inference: the values of the modules, in the memory of the conv's output."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rsp_d2.layers.group_norm import group_norm_relu_


@pytest.mark.parametrize("shape,groups,affine,dtype", [
    ((2, 8, 5, 7), 4, True, torch.float32),
    ((1, 6, 3, 1), 3, False, torch.float32),
    ((2, 16, 9, 4), 1, True, torch.float64),
    ((1, 12, 4, 6), 12, True, torch.float32),
])
def test_matches_the_modules_in_place(shape, groups, affine, dtype):
    torch.manual_seed(0)
    norm = nn.GroupNorm(groups, shape[1], affine=affine).to(dtype)
    if affine:
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    y = torch.randn(shape, dtype=dtype) * 3 + 2
    with torch.no_grad():
        expected = F.relu(norm(y))
    out = y.clone()
    assert group_norm_relu_(out, norm) is out
    torch.testing.assert_close(out, expected)


def test_accurate_on_a_large_map_with_an_offset():
    # A level of the paper's size with a mean far from zero: the float32 sums must not lose
    # the variance (a one-pass E[y^2] - E[y]^2 or one long float32 sum would).
    torch.manual_seed(0)
    norm = nn.GroupNorm(32, 128)
    y = torch.randn(1, 128, 128, 256) + 30
    with torch.no_grad():
        reference = F.relu(F.group_norm(y.double(), 32, norm.weight.double(),
                                        norm.bias.double()))
    out = group_norm_relu_(y.clone(), norm).double()
    assert (out - reference).abs().max().item() < 1e-5
