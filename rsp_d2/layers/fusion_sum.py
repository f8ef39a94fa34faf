"""The baseline's fusion (Semantic FPN): pixel-to-pixel aggregation.

Pure PyTorch: nothing here imports detectron2.
"""
import torch

from .fusion_base import Fusion, FusionSettings, upsample_to

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
        return upsample_to(a, x).add_(x)
