"""The baseline's fusion (Semantic FPN): pixel-to-pixel aggregation.

Pure PyTorch: nothing here imports detectron2.
"""
import torch

from .fusion_base import Fusion, FusionSettings, upsample_to
from .row_bands import BAND_ROWS, band_upsampler, row_bands

__all__ = ["SumFusion"]


class SumFusion(Fusion):
    """x + z. No parameters; `channels` only for the fusions' common signature."""

    kind = "sum"

    def __init__(self, channels: int):
        super().__init__()

    @classmethod
    def from_settings(cls, channels: int, settings: FusionSettings) -> "SumFusion":
        return cls(channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x + z

    def _fuse_in_place(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.promote_types(x.dtype, a.dtype):  # x + z would be a's dtype
            return x + upsample_to(a, x)
        # z = up(a) a band of rows at a time (:func:`band_upsampler`), added into x: z is never
        # a whole map of x's size (where the ratio is a power of two).
        z_rows = band_upsampler(a, tuple(x.shape[-2:]))
        for r0, r1, _, _ in row_bands(x.shape[-2], BAND_ROWS, 0):
            x[..., r0:r1, :] += z_rows(r0, r1)
        return x
