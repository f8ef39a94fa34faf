"""The +CONTEXT ablation (Table IV): the relation weights replaced by a plain average over the
same window.

Pure PyTorch: nothing here imports detectron2.
"""
import torch
import torch.nn.functional as F

from .fusion_base import Fusion, FusionSettings, upsample_to
from .rse_checks import RSEWindow

__all__ = ["ContextFusion", "window_average"]


def window_average(z: torch.Tensor, kernel_size: int, dilation: int = 1) -> torch.Tensor:
    """Mean of z over the dilated k x k window of each pixel, counting only positions inside
    the map (the same border rule as the relation). (N, C, H, W) -> (N, C, H, W).

    A dilated window on the full grid is a dense window on each of the dilation**2 sub-grids
    {(i, j): i = a, j = b mod dilation}, so pooling runs there.
    """
    n, c, h, w = z.shape
    d, r = dilation, kernel_size // 2
    if d == 1:
        return F.avg_pool2d(z, kernel_size, 1, r, count_include_pad=False)
    hp, wp = -(-h // d) * d, -(-w // d) * d
    ones = z.new_ones(1, 1, h, w)

    def to_subgrids(t):
        t = F.pad(t, (0, wp - w, 0, hp - h))
        b, ch = t.shape[:2]
        t = t.view(b, ch, hp // d, d, wp // d, d).permute(0, 3, 5, 1, 2, 4)
        return t.reshape(b * d * d, ch, hp // d, wp // d)

    def from_subgrids(t, b):
        ch = t.shape[1]
        t = t.view(b, d, d, ch, hp // d, wp // d).permute(0, 3, 4, 1, 5, 2)
        return t.reshape(b, ch, hp, wp)[:, :, :h, :w]

    # Sums (pad counted as zero) divided by the number of real pixels in each window.
    sums = F.avg_pool2d(to_subgrids(z), kernel_size, 1, r, count_include_pad=True)
    counts = F.avg_pool2d(to_subgrids(ones), kernel_size, 1, r, count_include_pad=True)
    return from_subgrids(sums, n) / from_subgrids(counts, 1)


class ContextFusion(Fusion):
    """+CONTEXT of Table IV: x + mean_{window}(z), the window of the RSE (odd kernel_size,
    checked when built). No parameters; `channels` only for the fusions' common signature."""

    kind = "context"

    def __init__(self, channels: int, kernel_size: int = 7, dilation: int = 1):
        super().__init__()
        self.window = RSEWindow(kernel_size, dilation)

    @classmethod
    def from_settings(cls, channels: int, settings: FusionSettings) -> "ContextFusion":
        return cls(channels, settings.kernel_size, settings.dilation)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x + window_average(z, self.window.kernel_size, self.window.dilation)

    def _fuse_in_place(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        z = upsample_to(a, x)
        return window_average(z, self.window.kernel_size, self.window.dilation).add_(x)
