"""Running a windowed operation over a map one band of rows at a time.

The RSP fusion at inference (:meth:`RelationalSemanticsExtractor.add_to_
<rsp_d2.layers.rse_extractor.RelationalSemanticsExtractor.add_to_>`) holds the relation's
upsampled key and value, its logits and its output one band at a time instead of whole maps,
and the head's 3x3 convs (:func:`conv2d_rows`) read their input a band at a time: each band
reads `reach` rows more on each side, so every output row sees exactly the rows it would see
on the whole map.

Pure PyTorch: nothing here imports detectron2.
"""
from typing import Callable, Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BAND_ROWS", "row_bands", "band_upsampler", "conv2d_rows"]

# Output rows per band, at inference. A band of the relation also computes it (and f_q) on the
# window's reach above and below, output that is thrown away, and each band of a conv is a
# call of its own: fewer rows hold smaller transient maps but repeat more of that work
# (docs/MODEL_ZOO.md gives what other band sizes measured).
BAND_ROWS = 16


def row_bands(height: int, rows: int, reach: int) -> Iterator[Tuple[int, int, int, int]]:
    """(r0, r1, lo, hi) for the output rows [r0, r1) of [0, height), `rows` at a time (the
    last band may be shorter), and the rows [lo, hi) they read: `reach` more on each side,
    clipped to the map."""
    if rows < 1 or reach < 0:
        raise ValueError(f"row_bands: rows={rows} must be >= 1 and reach={reach} >= 0")
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        yield r0, r1, max(r0 - reach, 0), min(r1 + reach, height)


def band_upsampler(t: torch.Tensor, size: Tuple[int, int]) -> Callable[[int, int], torch.Tensor]:
    """``rows(lo, hi)``: the rows [lo, hi) of ``F.interpolate(t, size, mode="bilinear",
    align_corners=False)``, (N, C, hi - lo, W) from t (N, C, h, w).

    When H is h times a power of two (an FPN's levels on an input padded to the coarsest
    stride), each call upsamples only the rows of t that its rows read, one more on each side,
    and gives the same numbers as slicing the whole upsampled map: the slice's source
    coordinates are the whole map's shifted by a whole number of rows (exactly, in floating
    point, for a power-of-two ratio), and the extra rows keep the slice's own border clamping
    away from the rows returned. Otherwise the map is upsampled once, whole, and sliced.
    """
    height, width = size
    h = t.shape[-2]
    ratio = height // h
    if height % h or ratio & (ratio - 1):
        whole = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        return lambda lo, hi: whole[..., lo:hi, :]

    def rows(lo: int, hi: int) -> torch.Tensor:
        # Output row i reads source rows floor((i + 0.5) / ratio - 0.5) and the next one.
        c0, c1 = max(lo // ratio - 1, 0), min((hi - 1) // ratio + 2, h)
        part = _upsample_rows(t[..., c0:c1, :], ((c1 - c0) * ratio, width))
        return part[..., lo - c0 * ratio:hi - c0 * ratio, :]

    return rows


def _upsample_rows(t: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a band t (N, C, h, w) to `size`. A bfloat16/float16 band on the CPU
    goes through float32: the reduced-precision kernel computes in float32 and rounds once, so
    the values are the same bit for bit (tested), and the float32 kernel is the faster one."""
    if t.device.type == "cpu" and t.dtype in (torch.bfloat16, torch.float16):
        return F.interpolate(t.float(), size=size, mode="bilinear",
                             align_corners=False).to(t.dtype)
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def conv2d_rows(x: torch.Tensor, conv: nn.Conv2d, rows: int) -> torch.Tensor:
    """``conv._conv_forward(x, conv.weight, conv.bias)`` computed `rows` output rows at a time
    into one output map, (N, C_out, H_out, W_out) from x (N, C_in, H, W).

    A convolution library copies its whole input into its own layout before it computes (on
    the CPU, oneDNN's blocked formats): on the finest FPN level that copy is larger than the
    conv's output. A band's input is the rows its output reads (the kernel's reach above and
    below, zero rows where that falls outside the map), so only a band's copy exists at a
    time, and it stays in cache. Each output pixel sums the same products as on the whole map.
    A conv on another device than the CPU (whose libraries make no such copy, and where each
    band would be a kernel launch), on an input that is not a contiguous (N, C, H, W) map
    (channels_last is the libraries' own layout), with a stride, a padding mode other than
    zeros or a string padding, or on a map of at most four bands (where the calls' overhead
    outweighs what the bands save), runs whole.
    """
    if (x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous()
            or conv.stride != (1, 1) or conv.padding_mode != "zeros"
            or isinstance(conv.padding, str)):
        return conv._conv_forward(x, conv.weight, conv.bias)
    height = x.shape[-2]
    pad_h, pad_w = conv.padding
    reach = conv.dilation[0] * (conv.kernel_size[0] - 1)  # an output row reads reach + 1 rows
    out_height = height + 2 * pad_h - reach
    if out_height <= 4 * rows:
        return conv._conv_forward(x, conv.weight, conv.bias)
    out = None
    for r0, r1, _, _ in row_bands(out_height, rows, 0):
        lo, hi = r0 - pad_h, r1 - pad_h + reach  # input rows [lo, hi), some maybe padding
        a, b = min(max(lo, 0), height), min(max(hi, 0), height)
        band = x[..., a:b, :]
        above = max(min(-lo, hi - lo), 0)
        below = hi - lo - above - (b - a)
        if above or below:
            band = F.pad(band, (0, 0, above, below))
        y = F.conv2d(band, conv.weight, conv.bias, 1, (0, pad_w), conv.dilation, conv.groups)
        if out is None:  # the first band's dtype: autocast may compute in another than x's
            out = y.new_empty(y.shape[:2] + (out_height, y.shape[-1]))
        out[..., r0:r1, :] = y
    return out
