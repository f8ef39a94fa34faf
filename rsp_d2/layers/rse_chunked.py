"""Memory-efficient RSE (Eq. 1-3) for any device and floating dtype: ``impl="chunked"``.

The reference unfolds key and value into (k*k, M, H, W) / (k*k, C, H, W) tensors. Here the k*k
window offsets are visited one at a time: for offset (dy, dx) the pixels whose neighbour
(i + dy, j + dx) lies inside the map form one rectangle, so the logits and the aggregation of
that offset are a product of two shifted *views* (no padding, no copy). The map is further cut
into bands of rows so that the band's query/key/value/output rows stay in cache across the k*k
offsets. The largest tensors created are the (N, heads, k*k, H, W) logits/weights; a custom
autograd Function saves only the inputs and the softmax weights and recomputes the rest.
"""
from typing import List, Optional, Tuple

import torch

from .rse import register_rse_impl

__all__ = ["rse_attention_chunked"]

# Rows per band. Measured on a 2-core AMD EPYC (32 MiB L3) at the paper's 1/8-scale shape
# (M=64, C=128, W=256): bands of 16-32 rows keep a band's working set in L3 across the 49
# offsets; see tools/benchmark.py.
_BAND_ROWS = 16


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Sums of 49 products/exps lose too much in half precision: accumulate in float32.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _offsets(kernel_size: int, dilation: int) -> List[Tuple[int, int]]:
    """(dy, dx) of the k*k window positions in row-major order, the row order of `pos`."""
    r = kernel_size // 2
    return [(dy * dilation, dx * dilation) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def _span(lo: int, hi: int, shift: int, size: int) -> Optional[Tuple[slice, slice]]:
    """Query indices in [lo, hi) whose neighbour at +shift is inside [0, size), and those
    neighbours' indices; None if there are none (the whole offset falls off the map)."""
    a, b = max(lo, -shift), min(hi, size - shift)
    if a >= b:
        return None
    return slice(a, b), slice(a + shift, b + shift)


def _windows(h: int, w: int, kernel_size: int, dilation: int, band_rows: int):
    """Yield (row_lo, row_hi, [(o, rows_q, cols_q, rows_kv, cols_kv), ...]) per band of rows:
    every offset o with at least one query pixel of the band whose neighbour is on the map."""
    offsets = _offsets(kernel_size, dilation)
    for lo in range(0, h, band_rows):
        hi = min(lo + band_rows, h)
        items = []
        for o, (dy, dx) in enumerate(offsets):
            rows, cols = _span(lo, hi, dy, h), _span(0, w, dx, w)
            if rows is not None and cols is not None:
                items.append((o, rows[0], cols[0], rows[1], cols[1]))
        yield lo, hi, items


def _outside_mask(h, w, kernel_size, dilation, device) -> torch.Tensor:
    """(k*k, H, W) bool, True where the window position falls outside the map."""
    outside = torch.ones(kernel_size * kernel_size, h, w, dtype=torch.bool, device=device)
    for o, rq, cq, _, _ in next(_windows(h, w, kernel_size, dilation, h))[2]:
        outside[o, rq, cq] = False
    return outside


def _heads(x: torch.Tensor, num_heads: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, G*D, H, W) -> (N, G, D, H, W) in `dtype` (a view when no cast is needed)."""
    n, c, h, w = x.shape
    return x.to(dtype).reshape(n, num_heads, c // num_heads, h, w)


def _pos_heads(pos: torch.Tensor, num_heads: int, dtype: torch.dtype) -> torch.Tensor:
    """(k*k, M) -> (k*k, G, M/G)."""
    kk, m = pos.shape
    return pos.to(dtype).reshape(kk, num_heads, m // num_heads)


def _relation_weights(q, k, pos, kernel_size, dilation, band_rows):
    """Softmax weights of Eq. 2-3, w[n, g, o, i, j], from head-split q, k: (N, G, M/G, H, W).

    Returns (N, G, k*k, H, W), zero where the window position is outside the map.
    """
    n, g, _, h, w = q.shape
    kk = kernel_size * kernel_size
    if pos is not None:
        # q . pos[o] is a small matmul (k*k x M/G per head), the pos half of Eq. 3's logit.
        logits = torch.einsum("ngmhw,ogm->ngohw", q, pos)
    else:
        logits = q.new_zeros(n, g, kk, h, w)
    for _, _, items in _windows(h, w, kernel_size, dilation, band_rows):
        for o, rq, cq, rk, ck in items:
            logits[:, :, o, rq, cq] += torch.linalg.vecdot(q[..., rq, cq], k[..., rk, ck], dim=2)
    logits.masked_fill_(_outside_mask(h, w, kernel_size, dilation, q.device), float("-inf"))
    # softmax subtracts the per-pixel max before exp; the centre offset is always on the map,
    # so every row has a finite max and no NaN arises from an all -inf row.
    return torch.softmax(logits, dim=2)


def _aggregate(weights, v, kernel_size, dilation, band_rows):
    """Eq. 1's weighted sum: (N, G, k*k, H, W) weights, (N, G, C/G, H, W) values -> same as v."""
    out = torch.zeros_like(v)
    h, w = v.shape[-2:]
    for _, _, items in _windows(h, w, kernel_size, dilation, band_rows):
        for o, rq, cq, rk, ck in items:
            out[..., rq, cq].addcmul_(weights[:, :, o:o + 1, rq, cq], v[..., rk, ck])
    return out


class _ChunkedRSE(torch.autograd.Function):
    """Saves the inputs and the (N, G, k*k, H, W) weights; backward recomputes shifted products
    offset by offset, so no (k*k, M or C, H, W) tensor ever exists."""

    @staticmethod
    def forward(ctx, query, key, value, pos, kernel_size, dilation, num_heads, band_rows):
        cdt = _compute_dtype(query.dtype)
        q, k, v = (_heads(t, num_heads, cdt) for t in (query, key, value))
        p = _pos_heads(pos, num_heads, cdt) if pos is not None else None
        weights = _relation_weights(q, k, p, kernel_size, dilation, band_rows)
        out = _aggregate(weights, v, kernel_size, dilation, band_rows)
        ctx.save_for_backward(query, key, value, pos, weights)
        ctx.args = (kernel_size, dilation, num_heads, band_rows)
        return out.reshape(value.shape).to(value.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        query, key, value, pos, weights = ctx.saved_tensors
        kernel_size, dilation, num_heads, band_rows = ctx.args
        cdt = weights.dtype
        q, k, v, go = (_heads(t, num_heads, cdt) for t in (query, key, value, grad_out))
        h, w = q.shape[-2:]
        d_weights = torch.zeros_like(weights)
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for lo, hi, items in _windows(h, w, kernel_size, dilation, band_rows):
            # Eq. 1 backward: dL/dw_o = g . v_o and dL/dv_o += w_o g.
            for o, rq, cq, rk, ck in items:
                d_weights[:, :, o, rq, cq] = torch.linalg.vecdot(go[..., rq, cq], v[..., rk, ck], dim=2)
                dv[..., rk, ck].addcmul_(weights[:, :, o:o + 1, rq, cq], go[..., rq, cq])
            # Softmax backward on the band (all offsets of its pixels are known now):
            # dlogit = w * (dw - sum_o w dw); masked positions have w = 0 and stay 0.
            wb, dwb = weights[:, :, :, lo:hi], d_weights[:, :, :, lo:hi]
            dwb.sub_((wb * dwb).sum(dim=2, keepdim=True)).mul_(wb)
            # Eq. 2-3 backward: dq += dlogit_o (k_o + pos_o), dk_o += dlogit_o q.
            for o, rq, cq, rk, ck in items:
                dlogit = d_weights[:, :, o:o + 1, rq, cq]
                dq[..., rq, cq].addcmul_(dlogit, k[..., rk, ck])
                dk[..., rk, ck].addcmul_(dlogit, q[..., rq, cq])
        d_logits = d_weights
        d_pos = None
        if pos is not None:
            p = _pos_heads(pos, num_heads, cdt)
            dq += torch.einsum("ngohw,ogm->ngmhw", d_logits, p)
            if ctx.needs_input_grad[3]:
                d_pos = torch.einsum("ngohw,ngmhw->ogm", d_logits, q).reshape(pos.shape).to(pos.dtype)
        grads = [g.reshape(t.shape).to(t.dtype) for g, t in ((dq, query), (dk, key), (dv, value))]
        return (*grads, d_pos, None, None, None, None)


def rse_attention_chunked(query, key, value, pos=None, kernel_size=7, dilation=1, num_heads=1,
                          band_rows: int = _BAND_ROWS):
    """Same contract as :func:`rsp_d2.layers.rse_attention` (Eq. 1-3, masked borders, no scaling).

    Args:
        query, key: (N, M, H, W); value: (N, C, H, W); pos: (k*k, M) or None.
        band_rows: rows per cache band (a speed knob only; results do not depend on it).

    Returns:
        (N, C, H, W) in value's dtype; fp16/bf16 inputs are computed in float32.
    Extra memory: O((M + C) * H * W + heads * k*k * H * W), never k*k * (M or C) * H * W.
    """
    return _ChunkedRSE.apply(query, key, value, pos, kernel_size, dilation, num_heads, band_rows)


def _chunked(query, key, value, pos, kernel_size, dilation, num_heads):
    return rse_attention_chunked(query, key, value, pos, kernel_size, dilation, num_heads)


register_rse_impl("chunked", _chunked, lambda q: q.is_floating_point())
