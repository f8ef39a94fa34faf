"""Inference one band of rows at a time (rsp_d2/layers/row_bands.py): the RSP fusion
(RelationalSemanticsExtractor.add_to_) and the head's convs (conv2d_rows) give the same values
as the plain call, and only bands of the relation's maps and of the convs' inputs exist."""
import pytest
import torch
import torch.nn.functional as F

from rsp_d2.layers import FusionSettings, build_fusion, rse_extractor
from rsp_d2.layers.fusion_base import upsample_to
from rsp_d2.layers.row_bands import band_upsampler, conv2d_rows, row_bands


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
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_band_upsampler_gives_the_rows_of_the_whole_map(coarse, fine, dtype):
    torch.manual_seed(0)
    t = torch.randn(2, 3, *coarse).to(dtype)
    whole = F.interpolate(t, size=fine, mode="bilinear", align_corners=False)
    rows = band_upsampler(t, fine)
    for lo in range(fine[0]):
        for hi in range(lo + 1, fine[0] + 1):
            assert torch.equal(rows(lo, hi), whole[..., lo:hi, :]), (lo, hi)


@pytest.mark.parametrize("conv_args,height", [
    (dict(kernel_size=3, padding=1), 23),                   # the head's 3x3 conv
    (dict(kernel_size=3, padding=2, dilation=2), 21),       # dilated
    (dict(kernel_size=5, padding=1, bias=False), 22),       # narrower than the kernel's reach
    (dict(kernel_size=1, padding=3, groups=2), 17),         # bands wholly in the padding
    (dict(kernel_size=(3, 1), padding=(1, 0)), 20),         # rectangular
])
def test_conv2d_rows_matches_the_whole_conv(monkeypatch, conv_args, height):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, **conv_args)
    x = torch.randn(2, 4, height, 9)
    with torch.no_grad():
        expected = conv(x)
        calls = []
        conv2d = F.conv2d
        monkeypatch.setattr(F, "conv2d", lambda *a: calls.append(a) or conv2d(*a))
        got = conv2d_rows(x, conv, rows=3)
    torch.testing.assert_close(got, expected)
    assert len(calls) == -(-expected.shape[-2] // 3)  # one call per band of 3 output rows
    assert all(a[0].shape[-2] <= 3 + conv.dilation[0] * (conv.kernel_size[0] - 1) for a in calls)


@pytest.mark.parametrize("conv_args,height", [
    (dict(kernel_size=3, padding=1), 12),                        # at most four bands
    (dict(kernel_size=3, padding=1, stride=2), 40),              # strided
    (dict(kernel_size=3, padding="same"), 40),                   # string padding
    (dict(kernel_size=3, padding=1, padding_mode="reflect"), 40),  # not zeros
    (dict(kernel_size=3, padding=1), "channels_last"),           # the conv library's layout
])
def test_conv2d_rows_runs_whole_where_bands_do_not_apply(conv_args, height, device="cpu"):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, **conv_args).to(device)
    x = torch.randn(1, 4, 40 if height == "channels_last" else height, 7, device=device)
    if height == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    whole = []
    conv_forward = conv._conv_forward
    conv._conv_forward = lambda *a: whole.append(a) or conv_forward(*a)
    with torch.no_grad():
        got = conv2d_rows(x, conv, rows=3)
    assert len(whole) == 1 and torch.equal(got, conv_forward(x, conv.weight, conv.bias))


def test_conv2d_rows_under_autocast():
    # The bands compute in autocast's bfloat16 like the whole conv; the output takes its dtype.
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 6, 3, padding=1)
    x = torch.randn(1, 8, 30, 9)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        expected = conv(x)
        got = conv2d_rows(x, conv, rows=4)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected)  # bfloat16 tolerance: blockings may round apart


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_conv2d_rows_runs_whole_on_cuda():
    test_conv2d_rows_runs_whole_where_bands_do_not_apply(dict(kernel_size=3, padding=1), 40,
                                                         device="cuda")


def test_band_upsampler_in_bfloat16_at_the_heads_width():
    # The bfloat16 bands go through float32 on the CPU: still the whole map's rows bit for bit
    # on maps as wide as the head's (the kernels' vector loops), channels_last, under autocast.
    torch.manual_seed(0)
    t = torch.randn(1, 8, 32, 256).bfloat16()
    for source in (t, t.to(memory_format=torch.channels_last)):
        with torch.autocast("cpu", torch.bfloat16):
            whole = F.interpolate(source, size=(128, 512), mode="bilinear", align_corners=False)
            rows = band_upsampler(source, (128, 512))
            for r0, r1, _, _ in row_bands(128, 16, 0):
                assert torch.equal(rows(r0, r1), whole[..., r0:r1, :]), r0


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


@pytest.mark.parametrize("x_dtype,a_dtype", [(torch.float32, torch.float32),
                                             (torch.float32, torch.bfloat16),
                                             (torch.bfloat16, torch.float32)])
def test_sum_fusion_in_bands_is_the_plain_sum(x_dtype, a_dtype):
    # The sum adds up(a) into x a band of rows at a time: bit for bit x + z, in the dtype
    # x + z has (a wider a's dtype wins, as in the plain call).
    torch.manual_seed(0)
    fusion = build_fusion("sum", 4, FusionSettings()).eval()
    x, a = torch.randn(1, 4, 40, 6).to(x_dtype), torch.randn(1, 4, 10, 3).to(a_dtype)
    with torch.no_grad():
        expected = fusion(x, upsample_to(a, x))
        got = fusion.fuse_(x.clone(), a)
    assert got.dtype == expected.dtype and torch.equal(got, expected)
