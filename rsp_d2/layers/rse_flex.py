"""The RSE relation (Eq. 1-3) as FlexAttention: ``impl="flex"`` (torch >= 2.5, CUDA tensors).

Every pixel is a token. The k x k dilated window is a `mask_mod` (so the block mask skips
all key blocks farther than r*dilation rows away and out-of-map neighbours are excluded,
as in the reference), and the position term q . pos[o] of Eq. 3 is a `score_mod` reading a
(N, G, H*W, k*k) table, the size of the softmax weights. No 1/sqrt(d) scaling (scale=1).
Gradients through the position table (a captured tensor that requires grad) need torch >= 2.6.
"""
import functools

import torch
import torch.nn.functional as F

from .rse_common import enter_backend
from .rse_registry import RSEImpl

__all__ = ["rse_attention_flex", "HAS_FLEX", "IMPL"]

try:  # FlexAttention arrived in torch 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    HAS_FLEX = True
except ImportError:
    HAS_FLEX = False


def _missing() -> str:
    return "" if HAS_FLEX else (f"torch {torch.__version__} has no "
                                "torch.nn.attention.flex_attention (needs >= 2.5)")


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    # Eager flex_attention materializes the (H*W)^2 score matrix; compiled, it is fused.
    return torch.compile(flex_attention, dynamic=False)


def _offsets(w: int, q_idx, kv_idx):
    """(dy, dx) from query token q_idx to key token kv_idx on a map of width w."""
    return kv_idx // w - q_idx // w, kv_idx % w - q_idx % w


@functools.lru_cache(maxsize=16)
def _window_block_mask(h: int, w: int, kernel_size: int, dilation: int, device: str):
    """Which (query, key) token pairs lie in the dilated k x k window; a key off the map is no
    token at all, so out-of-map neighbours drop out, and a wrap to the next row has |dx| > r*d.
    Depends only on the geometry, so it is built once per map size."""
    rd, d = (kernel_size // 2) * dilation, dilation

    def in_window(b, hd, q_idx, kv_idx):
        dy, dx = _offsets(w, q_idx, kv_idx)
        return (dy.abs() <= rd) & (dx.abs() <= rd) & (dy % d == 0) & (dx % d == 0)

    return create_block_mask(in_window, None, None, h * w, h * w, device=device)


def _tokens(x: torch.Tensor, num_heads: int, dim: int) -> torch.Tensor:
    """(N, G*D, H, W) -> (N, G, H*W, dim), zero-padded from D to dim channels."""
    n, c, h, w = x.shape
    t = x.reshape(n, num_heads, c // num_heads, h * w).transpose(2, 3)
    return F.pad(t, (0, dim - c // num_heads)).contiguous()


def rse_attention_flex(query, key, value, pos=None, kernel_size=7, dilation=1, num_heads=1):
    """Same contract as :func:`rsp_d2.layers.rse_attention`; shapes (N, M, H, W), (N, C, H, W),
    pos (k*k, M) or None. Returns (N, C, H, W)."""
    enter_backend("flex", _missing())
    n, m, h, w = query.shape
    c = value.shape[1]
    k, r, d = kernel_size, kernel_size // 2, dilation
    # flex_attention wants one power-of-2 head dim >= 16 for q, k and v; zero channels change
    # neither the dot products nor (after slicing) the output.
    dim = max(16, 1 << (max(m, c) // num_heads - 1).bit_length())
    q, kt, v = (_tokens(t, num_heads, dim) for t in (query, key, value))
    if pos is not None:
        qh = query.reshape(n, num_heads, m // num_heads, h * w)
        bias = torch.einsum("ngmp,ogm->ngpo", qh, pos.reshape(k * k, num_heads, m // num_heads))

    def add_pos(score, b, hd, q_idx, kv_idx):
        dy, dx = _offsets(w, q_idx, kv_idx)
        o = ((dy // d + r).clamp(0, k - 1)) * k + (dx // d + r).clamp(0, k - 1)
        return score + bias[b, hd, q_idx, o]

    block_mask = _window_block_mask(h, w, k, d, str(query.device))
    out = _compiled_flex()(q, kt, v, score_mod=add_pos if pos is not None else None,
                           block_mask=block_mask, scale=1.0)
    return out[..., : c // num_heads].transpose(2, 3).reshape(n, c, h, w)


# CUDA only: FlexAttention's compiled kernels.
IMPL = RSEImpl("flex", rse_attention_flex, devices=("cuda",), requirement=_missing)
