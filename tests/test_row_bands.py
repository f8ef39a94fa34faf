"""The RSP fusion at inference, one band of rows at a time (rsp_d2/layers/row_bands.py and
RelationalSemanticsExtractor.add_to_): the same values as the plain call, and only bands of
the relation's maps ever exist."""
import pytest
import torch
import torch.nn.functional as F

from rsp_d2.layers import FusionSettings, build_fusion, rse_extractor
from rsp_d2.layers.fusion_base import upsample_to
from rsp_d2.layers.row_bands import band_upsampler, row_bands


@pytest.mark.parametrize("height,rows,reach", [(1, 4, 3), (10, 3, 1), (16, 16, 3), (17, 4, 5)])
def test_row_bands_cover_the_map_once_and_read_the_reach(height, rows, reach):
    bands = list(row_bands(height, rows, reach))
    covered = [i for r0, r1, _, _ in bands for i in range(r0, r1)]
    assert covered == list(range(height))
    for r0, r1, lo, hi in bands:
        assert r1 - r0 <= rows
        assert (lo, hi) == (max(r0 - reach, 0), min(r1 + reach, height))


def test_row_bands_refuse_empty_bands():
    with pytest.raises(ValueError, match="rows=0"):
        list(row_bands(8, 0, 1))


@pytest.mark.parametrize("coarse,fine", [
    ((5, 7), (10, 14)),   # x2: upsampled a band at a time
    ((3, 5), (12, 9)),    # x4 in height, any width
    ((1, 2), (8, 3)),     # one coarse row
    ((4, 4), (12, 8)),    # x3: upsampled once, whole
    ((5, 7), (9, 13)),    # not a multiple: upsampled once, whole
])
def test_band_upsampler_gives_the_rows_of_the_whole_map(coarse, fine):
    torch.manual_seed(0)
    t = torch.randn(2, 3, *coarse)
    whole = F.interpolate(t, size=fine, mode="bilinear", align_corners=False)
    rows = band_upsampler(t, fine)
    for lo in range(fine[0]):
        for hi in range(lo + 1, fine[0] + 1):
            assert torch.equal(rows(lo, hi), whole[..., lo:hi, :]), (lo, hi)


def _rsp(kernel_size=3, dilation=1, num_heads=1, channels=16, impl="auto"):
    torch.manual_seed(0)
    return build_fusion("rsp", channels, FusionSettings(
        kernel_size=kernel_size, dilation=dilation, num_heads=num_heads, impl=impl)).eval()


@pytest.mark.parametrize("kernel_size,dilation,num_heads,rows,fine,coarse", [
    (3, 1, 1, 2, (19, 13), (10, 7)),   # many bands, an odd size
    (5, 2, 2, 3, (16, 12), (8, 6)),    # rows below the reach (4)
    (7, 1, 1, 16, (32, 20), (16, 10)),  # the paper's window, two bands
    (3, 1, 1, 64, (12, 9), (6, 5)),    # one band
])
@pytest.mark.parametrize("impl", ["auto", "chunked"])
def test_add_to_matches_the_plain_call(kernel_size, dilation, num_heads, rows, fine, coarse,
                                       impl):
    fusion = _rsp(kernel_size, dilation, num_heads, impl=impl)
    x, a = torch.randn(2, 16, *fine), torch.randn(2, 16, *coarse)
    with torch.no_grad():
        expected = fusion(x, upsample_to(a, x))
        got = x.clone()
        assert fusion.rse.add_to_(got, a, rows=rows) is got
    # Only rounding apart: key and value are upsampled after f_k, f_v instead of before.
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_add_to_holds_only_bands(monkeypatch):
    # Every relation call sees one band (its rows and the window's reach), with key and value
    # computed from the coarse map and upsampled a band at a time: nothing of x's whole size.
    fusion = _rsp(kernel_size=5)
    x, a = torch.randn(1, 16, 40, 24), torch.randn(1, 16, 20, 12)
    calls, kv_inputs, upsampled = [], [], []
    run_rse, interpolate = rse_extractor.run_rse, F.interpolate
    key_value = type(fusion.rse)._key_value
    monkeypatch.setattr(rse_extractor, "run_rse",
                        lambda q, k, v, *args: calls.append(q.shape[-2:]) or run_rse(q, k, v, *args))
    monkeypatch.setattr(type(fusion.rse), "_key_value",
                        lambda self, z: kv_inputs.append(z.shape[-2:]) or key_value(self, z))
    monkeypatch.setattr(F, "interpolate",
                        lambda *args, **kw: upsampled.append(kw["size"]) or interpolate(*args, **kw))
    with torch.no_grad():
        fusion.rse.add_to_(x, a, rows=8)
    assert kv_inputs == [(20, 12)]
    assert len(calls) == 5 and all(h <= 8 + 2 * 2 and w == 24 for h, w in calls)
    assert len(upsampled) == 5 and all(h < 40 for h, _ in upsampled)


@pytest.mark.parametrize("rows", [1, 2])
def test_add_to_bands_thinner_than_the_reach(rows):
    fusion = _rsp(kernel_size=7, dilation=2)  # reach 6
    x, a = torch.randn(1, 16, 16, 8), torch.randn(1, 16, 8, 4)
    with torch.no_grad():
        expected = fusion(x, upsample_to(a, x))
        got = fusion.rse.add_to_(x.clone(), a, rows=rows)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_add_to_under_bfloat16_autocast():
    fusion = _rsp()
    x, a = torch.randn(1, 16, 24, 16), torch.randn(1, 16, 12, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = fusion(x, upsample_to(a, x)).float()
        got = fusion.rse.add_to_(x.clone(), a, rows=5)
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)
