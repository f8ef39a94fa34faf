"""The readable definition of the RSE relation (Sec. III-A, Eq. 1-3), by unfolding:
``impl="reference"``. What FLOP counting traces (rsp_d2/analysis/flops.py), what the relation
weights of the figures come from, and the yardstick of every other implementation.

Pure PyTorch: nothing here imports detectron2.
"""
import torch
import torch.nn.functional as F

from .rse_checks import RSEWindow, check_rse_tensors
from .rse_registry import RSEImpl

__all__ = ["relative_position_map", "rse_relation_weights", "run_relation_weights",
           "rse_attention_reference", "IMPL"]


def relative_position_map(kernel_size: int, channels: int, device=None, dtype=None) -> torch.Tensor:
    """The normalized 2D relative position map p of Sec. III-A.

    Returns:
        (kernel_size**2, channels): row o is the offset (dy, dx) of window position o in
        row-major order, normalized to [-1, 1]; the first channels/2 channels hold the row
        offset, the second half the column offset. Dilation does not enter: p encodes the
        position inside the window, not the distance in pixels.
    """
    if channels % 2:
        raise ValueError(f"relative_position_map: channels must be even, got {channels}")
    r = (kernel_size - 1) // 2
    steps = torch.arange(-r, r + 1, device=device, dtype=torch.float32) / max(r, 1)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    half = channels // 2
    p = torch.cat([dy.reshape(-1, 1).expand(-1, half), dx.reshape(-1, 1).expand(-1, half)], dim=1)
    return p.to(dtype) if dtype is not None else p


def _unfold(x: torch.Tensor, kernel_size: int, dilation: int, groups: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, groups, C/groups, k*k, H, W), zero outside the map."""
    n, c, h, w = x.shape
    pad = dilation * (kernel_size // 2)
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=pad)
    return cols.view(n, groups, c // groups, kernel_size * kernel_size, h, w)


def _border_mask(h, w, kernel_size, dilation, device) -> torch.Tensor:
    """(1, 1, k*k, H, W) bool: True where the window position lies inside the map."""
    ones = torch.ones(1, 1, h, w, device=device)
    return _unfold(ones, kernel_size, dilation, 1)[:, :, 0] > 0


def _relation_weights(query, key, pos, kernel_size, dilation, num_heads):
    """Eq. 2-3 on checked arguments; see :func:`rse_relation_weights`."""
    n, m, h, w = query.shape
    kk = kernel_size * kernel_size
    keys = _unfold(key, kernel_size, dilation, num_heads)
    if pos is not None:
        keys = keys + pos.t().reshape(1, num_heads, m // num_heads, kk, 1, 1)
    q = query.view(n, num_heads, m // num_heads, h, w)
    logits = torch.einsum("bgmij,bgmkij->bgkij", q, keys)
    logits = logits.masked_fill(~_border_mask(h, w, kernel_size, dilation, query.device),
                                float("-inf"))
    # Softmax at least in float32: half-precision exp over 49 logits loses the small weights.
    acc = torch.promote_types(query.dtype, torch.float32)
    return logits.softmax(dim=2, dtype=acc).to(query.dtype)


def rse_relation_weights(query, key, pos=None, kernel_size=7, dilation=1, num_heads=1):
    """Softmax relation weights w of Eq. 2-3, computed by unfolding (the readable definition).

    Args:
        query, key: (N, M, H, W).
        pos: (k*k, M) or None, added to the key before the dot product (Eq. 3).

    Returns:
        (N, num_heads, k*k, H, W) weights, summing to 1 over the k*k window positions that lie
        inside the map; positions outside it get weight 0.
    """
    return run_relation_weights(query, key, pos, RSEWindow(kernel_size, dilation), num_heads)


def run_relation_weights(query, key, pos, window: RSEWindow, num_heads: int = 1):
    """:func:`rse_relation_weights` for a window checked when it was made (a module's): checks
    the tensors only. Shapes and result as for rse_relation_weights."""
    check_rse_tensors(query, key, query, pos, window, num_heads)
    return _relation_weights(query, key, pos, window.kernel_size, window.dilation, num_heads)


def rse_attention_reference(query, key, value, pos=None, kernel_size=7, dilation=1, num_heads=1):
    """Eq. 1 with the weights of Eq. 2-3, unfolded: same contract as
    :func:`rsp_d2.layers.rse_attention`, on checked arguments. (N, C, H, W) in value's dtype.
    Memory: the k*k*M*H*W and k*k*C*H*W unfoldings (what the other implementations avoid)."""
    n, c, h, w = value.shape
    weights = _relation_weights(query, key, pos, kernel_size, dilation, num_heads)
    values = _unfold(value, kernel_size, dilation, num_heads)
    out = torch.einsum("bgkij,bgckij->bgcij", weights, values)
    return out.reshape(n, c, h, w)


# The definition: any device and dtype, trusted by the self-check, and exportable.
IMPL = RSEImpl("reference", rse_attention_reference, trusted=True, exportable=True)
