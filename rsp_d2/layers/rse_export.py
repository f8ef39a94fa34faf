"""The RSE relation (Eq. 1-3) in standard tensor ops only: ``impl="export"``.

ONNX, TorchScript tracing and ``torch.export`` follow plain tensor ops, not the custom autograd
Functions, C++ loops or Triton kernels of the fast implementations: traced, those would either
fail or be recorded as one opaque call. Here every step is an op every exporter knows:

    kp, vp  = pad(key, r*d), pad(value, r*d)            zero borders of width r*d
    logit_o = sum_m q * kp[.., dy_o:, dx_o:]            one shifted slice per offset  Eq. 2
            (+ q . pos_o)                                                              Eq. 3
    w       = softmax over o of logits (N, G, k*k, H, W), -inf where offset o is off the map
    out     = sum_o w_o * vp[.., dy_o:, dx_o:]                                         Eq. 1

The largest tensors are the (N, G, k*k, H, W) logits/weights and one (N, C, H, W) product per
offset: never a k*k*M*H*W or k*k*C*H*W unfolding. ``rse_attention`` switches to this
implementation by itself while tracing, scripting or exporting (whatever ``impl`` says), so a
model built with ``impl="cpp"`` or ``"triton"`` exports all the same.
"""
import functools
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .rse import register_rse_impl

__all__ = ["rse_attention_export"]


def _windows(padded: torch.Tensor, h: int, w: int, kernel_size: int, dilation: int) -> List[torch.Tensor]:
    """The k*k windows of a map padded by r*dilation on each side, in row-major offset order
    (the row order of `pos`): element o is the map shifted by offset o, shape (..., H, W).
    Rows are sliced once per window row: exporters add one Slice node per slice, and the
    TorchScript-based ONNX exporter slows down with the node count."""
    out = []
    for i in range(kernel_size):
        band = padded[..., i * dilation:i * dilation + h, :]
        out.extend(band[..., j * dilation:j * dilation + w] for j in range(kernel_size))
    return out


@functools.lru_cache(maxsize=64)
def _inside_mask(h: int, w: int, kernel_size: int, dilation: int) -> np.ndarray:
    """(1, 1, k*k, H, W) bool, True where offset o of pixel (i, j) lies on the map. A numpy
    array, so that a trace records it as one constant rather than as the ops building it."""
    r = kernel_size // 2
    ii, jj = np.arange(h)[:, None], np.arange(w)[None, :]
    rows = [(0 <= ii + dy * dilation) & (ii + dy * dilation < h) for dy in range(-r, r + 1)]
    cols = [(0 <= jj + dx * dilation) & (jj + dx * dilation < w) for dx in range(-r, r + 1)]
    return np.stack([ry & cx for ry in rows for cx in cols])[None, None]


def rse_attention_export(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         pos: Optional[torch.Tensor] = None, kernel_size: int = 7,
                         dilation: int = 1, num_heads: int = 1) -> torch.Tensor:
    """Same contract as :func:`rsp_d2.layers.rse_attention` (Eq. 1-3, masked borders, no scaling).

    Args:
        query, key: (N, M, H, W); value: (N, C, H, W); pos: (k*k, M) or None.

    Returns:
        (N, C, H, W). Half-precision inputs are computed in float32 (like the reference's
        softmax) and returned in value's dtype.
    """
    # Python ints, also while tracing: the graph is specialized to the traced size.
    n, m, h, w = (int(s) for s in query.shape)
    c = int(value.shape[1])
    g, kk = num_heads, kernel_size * kernel_size
    dtype = value.dtype
    if dtype in (torch.float16, torch.bfloat16):
        query, key, value = query.float(), key.float(), value.float()
        pos = pos.float() if pos is not None else None
    pad = (kernel_size // 2) * dilation
    hp, wp = h + 2 * pad, w + 2 * pad

    def padded(x):  # (N, G*D, H, W) -> (N, G, D, H + 2 pad, W + 2 pad), zero borders
        return F.pad(x, (pad, pad, pad, pad)).reshape(n, g, x.shape[1] // g, hp, wp)

    q = query.reshape(n, g, m // g, h, w)
    logits = torch.cat([(q * k).sum(dim=2, keepdim=True)
                        for k in _windows(padded(key), h, w, kernel_size, dilation)], dim=2)
    if pos is not None:
        logits = logits + torch.einsum("ngmhw,ogm->ngohw", q, pos.reshape(kk, g, m // g))
    # Off-map offsets leave the softmax (-inf), as in the reference; the centre is always on the
    # map, so no pixel's row is all -inf.
    inside = torch.from_numpy(_inside_mask(h, w, kernel_size, dilation)).to(logits.device)
    weights = logits.masked_fill(~inside, float("-inf")).softmax(dim=2).split(1, dim=2)
    values = _windows(padded(value), h, w, kernel_size, dilation)
    out = weights[0] * values[0]
    for o in range(1, kk):
        out = out + weights[o] * values[o]
    return out.reshape(n, c, h, w).to(dtype)


# Never first in "auto" outside an export (the fused implementations are faster); rse_attention
# selects it by itself while tracing, scripting or exporting.
register_rse_impl("export", rse_attention_export, lambda q: q.is_floating_point(), priority=90,
                  exportable=True)
