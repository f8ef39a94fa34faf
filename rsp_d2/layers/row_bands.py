"""Running a windowed operation over a map one band of rows at a time.

The RSP fusion at inference (:meth:`RelationalSemanticsExtractor.add_to_
<rsp_d2.layers.rse_extractor.RelationalSemanticsExtractor.add_to_>`) holds the relation's
upsampled key and value, its logits and its output one band at a time instead of whole maps:
each band reads `reach` rows more on each side, so every output row sees exactly the rows it
would see on the whole map.

Pure PyTorch: nothing here imports detectron2.
"""
from typing import Callable, Iterator, Tuple

import torch
import torch.nn.functional as F

__all__ = ["row_bands", "band_upsampler"]


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
        part = F.interpolate(t[..., c0:c1, :], size=((c1 - c0) * ratio, width),
                             mode="bilinear", align_corners=False)
        return part[..., lo - c0 * ratio:hi - c0 * ratio, :]

    return rows
