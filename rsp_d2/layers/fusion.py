"""Cross-scale fusions of a low-level map x and the upsampled high-level map z.

`RelationalSemanticsPropagator` is the paper's RSP (Eq. 4); `SumFusion` is the baseline's
pixel-to-pixel sum; `SelfRelationFusion` and `ContextFusion` are the +SELF and +CONTEXT
ablations of Table IV. All take ``forward(x, z)`` with x, z of shape (N, C, H, W).
"""
import torch
import torch.nn.functional as F
from torch import nn

from .rse import relative_position_map, rse_attention, rse_relation_weights

__all__ = [
    "RelationalSemanticsExtractor",
    "RelationalSemanticsPropagator",
    "SelfRelationFusion",
    "ContextFusion",
    "SumFusion",
    "window_average",
    "FUSIONS",
    "build_fusion",
]


class RelationalSemanticsExtractor(nn.Module):
    """RSE (Sec. III-A, Fig. 3a): each pixel of x gathers context from the k x k region of z
    centred on it, weighted by its relation to each position of that region (Eq. 1-3).

    f_q, f_k are 1x1 convs C -> C/d; f_v is a 1x1 conv C -> C; f_p is a linear C -> C/d on the
    normalized relative-position map p (:func:`relative_position_map`).
    """

    def __init__(self, channels: int, kernel_size: int = 7, dilation: int = 1,
                 reduction: int = 2, num_heads: int = 1, pos_embedding: bool = True,
                 impl: str = "auto"):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"RelationalSemanticsExtractor: kernel_size must be odd, got {kernel_size}")
        if channels % reduction:
            raise ValueError(f"RelationalSemanticsExtractor: channels={channels} not divisible "
                             f"by reduction={reduction}")
        mid = channels // reduction
        if mid % num_heads or channels % num_heads:
            raise ValueError(f"RelationalSemanticsExtractor: channels={channels} and "
                             f"channels/reduction={mid} must be divisible by num_heads={num_heads}")
        self.kernel_size, self.dilation, self.num_heads, self.impl = kernel_size, dilation, num_heads, impl
        self.query = nn.Conv2d(channels, mid, 1)
        self.key = nn.Conv2d(channels, mid, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.pos = nn.Linear(channels, mid) if pos_embedding else None
        self.register_buffer("pos_map", relative_position_map(kernel_size, channels), persistent=False)

    def embeddings(self, x: torch.Tensor, z: torch.Tensor):
        """query (N, C/d, H, W), key (N, C/d, H, W), value (N, C, H, W), pos (k*k, C/d) or None."""
        pos = self.pos(self.pos_map.to(x.dtype)) if self.pos is not None else None
        return self.query(x), self.key(z), self.value(z), pos

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) low-level map; z: (N, C, H, W) high-level map upsampled to x.
        Returns z-hat: (N, C, H, W)."""
        q, k, v, pos = self.embeddings(x, z)
        return rse_attention(q, k, v, pos, self.kernel_size, self.dilation, self.num_heads, self.impl)

    @torch.no_grad()
    def relation_weights(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(N, num_heads, k*k, H, W): what each pixel of x attends to in z (Fig. 1b)."""
        q, k, _, pos = self.embeddings(x, z)
        return rse_relation_weights(q, k, pos, self.kernel_size, self.dilation, self.num_heads)


class RelationalSemanticsPropagator(nn.Module):
    """RSP (Sec. III-B, Eq. 4): x-hat = x + RSE(x, z)."""

    def __init__(self, channels: int, **rse_kwargs):
        super().__init__()
        self.rse = RelationalSemanticsExtractor(channels, **rse_kwargs)

    def forward(self, x, z):
        return x + self.rse(x, z)


class SelfRelationFusion(RelationalSemanticsPropagator):
    """+SELF of Table IV: a local relation on z alone (query from z, as in Local Relation
    Networks), added to x: x + RSE(z, z). Same cost as RSP, but x does not choose the context."""

    def forward(self, x, z):
        return x + self.rse(z, z)


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


class ContextFusion(nn.Module):
    """+CONTEXT of Table IV: the relation weights replaced by a plain average over the same
    window: x + mean_{window}(z). No parameters."""

    def __init__(self, channels: int, kernel_size: int = 7, dilation: int = 1, **unused):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation

    def forward(self, x, z):
        return x + window_average(z, self.kernel_size, self.dilation)


class SumFusion(nn.Module):
    """The baseline's pixel-to-pixel aggregation: x + z."""

    def __init__(self, channels: int, **unused):
        super().__init__()

    def forward(self, x, z):
        return x + z


FUSIONS = {
    "sum": SumFusion,
    "rsp": RelationalSemanticsPropagator,
    "self": SelfRelationFusion,
    "context": ContextFusion,
}


def build_fusion(name: str, channels: int, **rse_kwargs) -> nn.Module:
    """Build the fusion called `name` (a key of FUSIONS) for `channels`-channel maps."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; expected one of {sorted(FUSIONS)}")
    return FUSIONS[name](channels, **rse_kwargs)
