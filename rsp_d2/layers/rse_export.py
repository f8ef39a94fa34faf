"""The RSE relation (Eq. 1-3) in standard tensor ops only: ``impl="export"``.

ONNX, TorchScript tracing and ``torch.export`` follow plain tensor ops, not the custom autograd
Functions, C++ loops or Triton kernels of the fast implementations: traced, those would either
fail or be recorded as one opaque call. Here every step is an op every exporter knows, in one of
two forms:

*Blocks with a halo* (dilation 1): the map is cut into B x B blocks; each block's queries meet
the keys of the block and its r-pixel margin (an L x L halo, L = B + 2r) in one batched matrix
product, offsets outside each pixel's k x k window or off the map are masked, and the softmax
weights multiply the halo's values in a second matrix product:

    Q_b, K_b, V_b = gathers of the channels-last maps by constant block / halo indices
    logits  = Q_b (B*B, M) @ K_b^T (M, L*L)  (+ Q . pos, gathered to the window)    Eq. 2-3
    w       = softmax over the halo, masked outside the window and off the map
    out     = w (B*B, L*L) @ V_b (L*L, C), gathered back to the map                   Eq. 1

About thirty graph nodes per relation whatever k is, each map copied once by a gather, and
matrix products, which runtimes such as onnxruntime run several times faster than the k*k
elementwise passes of the shifted-slice form. The largest tensors are the
(N*G, blocks, B*B, L*L) logits, (L/k)^2 times the k*k*H*W logits of the definition (about 2x
for k = 7, B = 4), and the halos of key and value, (L/B)^2 times their size (6.25x): never a
k*k*C*H*W unfolding.

*Shifted slices* (dilation > 1, where a halo would hold mostly off-window pixels): one slice of
the zero-padded key and value per offset, the logits stacked to (N, G, k*k, H, W), masked
softmax, weighted sum; one (N, C, H, W) product per offset at a time.

*Per-offset products* (a graph traced for analysis, :func:`is_traced_for_analysis`: fvcore's
FLOP counter, which Detectron2's ``tools/analyze_model.py`` runs): the shifted slices again,
but each offset's dot products as a batch of (1 x D) @ (D x 1) matrix products and each
weighted value as a (1 x 1) @ (1 x C) one, so that a counter sees the definition's k*k*(M + C)
multiply-adds per pixel (what ``tools/analyze_head.py`` reports), not the halo's
(B + 2r)^2 / k^2 times as many, in the memory of one shifted map at a time.

``rse_attention`` switches to this implementation by itself while tracing, scripting or
exporting (whatever ``impl`` says), so a model built with ``impl="cpp"`` or ``"triton"`` exports
all the same. Every size-dependent quantity (pads, gather indices, border masks) is computed
from the inputs' shapes with tensor ops, never as Python ints or numpy constants: a traced
graph follows the input's height and width (dynamic axes in ONNX); only what depends on
kernel_size alone (the window mask and positional index of the halo form) is a constant.
Under :func:`fixed_size` (an export for one input size) the sizes are read as Python ints
instead, so the same ops build the indices from constants and the exporter folds them into
the graph's tables: onnxruntime then does not rebuild them at every call.
"""
import contextlib
import contextvars
import functools
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .rse_common import is_traced_for_analysis
from .rse_registry import RSEImpl

__all__ = ["rse_attention_export", "fixed_size", "IMPL"]

# Set only inside a `with fixed_size():` block, for the export call it wraps.
_FIXED_SIZE = contextvars.ContextVar("rse_export_fixed_size", default=False)


@contextlib.contextmanager
def fixed_size():
    """Within this block, traces of :func:`rse_attention_export` are specialized to the traced
    input size (their index tables constants), as for an ONNX export without dynamic axes."""
    token = _FIXED_SIZE.set(True)
    try:
        yield
    finally:
        _FIXED_SIZE.reset(token)


def _sizes(query, value):
    """(N, M, H, W, C): traced values while tracing (the graph follows the size), Python ints
    under :func:`fixed_size` (the graph's tables are constants)."""
    n, m, h, w = query.shape
    c = value.shape[1]
    if _FIXED_SIZE.get():
        return tuple(int(s) for s in (n, m, h, w, c))
    return n, m, h, w, c


def _windows(padded: torch.Tensor, h, w, kernel_size: int, dilation: int) -> List[torch.Tensor]:
    """The k*k windows of a map padded by r*dilation on each side, in row-major offset order
    (the row order of `pos`): element o is the map shifted by offset o, shape (..., H, W).
    Rows are sliced once per window row: exporters add one Slice node per slice, and the
    TorchScript-based ONNX exporter slows down with the node count."""
    out = []
    for i in range(kernel_size):
        band = padded[..., i * dilation:i * dilation + h, :]
        out.extend(band[..., j * dilation:j * dilation + w] for j in range(kernel_size))
    return out


def _inside_mask(like: torch.Tensor, h, w, kernel_size: int, dilation: int) -> torch.Tensor:
    """(1, 1, k*k, H, W) bool, True where offset o of pixel (i, j) lies on the map: the windows
    of a zero-padded map of ones, so that a trace computes it for the size it is run at."""
    pad = (kernel_size // 2) * dilation
    ones = F.pad(like.new_ones(1, 1, h, w), (pad, pad, pad, pad))
    return torch.stack(_windows(ones, h, w, kernel_size, dilation), dim=2) > 0


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
    dtype = value.dtype
    if dtype in (torch.float16, torch.bfloat16):
        query, key, value = query.float(), key.float(), value.float()
        pos = pos.float() if pos is not None else None
    if is_traced_for_analysis():
        form = _per_offset_products
    else:
        form = _halo_blocks if dilation == 1 else _shifted_slices
    return form(query, key, value, pos, kernel_size, dilation, num_heads).to(dtype)


def _grouped_windows(x, n, g, h, w, kernel_size: int, dilation: int) -> List[torch.Tensor]:
    """The k*k windows of (N, G*D, H, W) `x`, zero-padded, each (N, G, D, H, W)."""
    pad = (kernel_size // 2) * dilation
    padded = F.pad(x, (pad, pad, pad, pad)).reshape(n, g, x.shape[1] // g, h + 2 * pad,
                                                     w + 2 * pad)
    return _windows(padded, h, w, kernel_size, dilation)


def _shifted_slices(query, key, value, pos, kernel_size, dilation, num_heads):
    # Sizes as the shapes give them: traced values while tracing, so the graph is dynamic.
    n, m, h, w, c = _sizes(query, value)
    g, kk = num_heads, kernel_size * kernel_size

    q = query.reshape(n, g, m // g, h, w)
    logits = torch.cat([(q * k).sum(dim=2, keepdim=True) for k in
                        _grouped_windows(key, n, g, h, w, kernel_size, dilation)], dim=2)
    if pos is not None:
        logits = logits + torch.einsum("ngmhw,ogm->ngohw", q, pos.reshape(kk, g, m // g))
    # Off-map offsets leave the softmax (-inf), as in the reference; the centre is always on the
    # map, so no pixel's row is all -inf.
    inside = _inside_mask(logits, h, w, kernel_size, dilation)
    weights = logits.masked_fill(~inside, float("-inf")).softmax(dim=2).split(1, dim=2)
    values = _grouped_windows(value, n, g, h, w, kernel_size, dilation)
    out = weights[0] * values[0]
    for o in range(1, kk):
        out = out + weights[o] * values[o]
    return out.reshape(n, c, h, w)


def _per_offset_products(query, key, value, pos, kernel_size, dilation, num_heads):
    """Eq. 1-3 as the module's docstring says for analysis traces: query, key (N, M, H, W),
    value (N, C, H, W), pos (k*k, M) or None -> (N, C, H, W); the logits of offset o are the
    (1 x M/G) @ (M/G x 1) products q . (k_o + pos_o) of each pixel and head, the output the sum
    over o of (1 x 1) @ (1 x C/G) products w_o v_o."""
    n, m, h, w, c = _sizes(query, value)
    g, kk = num_heads, kernel_size * kernel_size

    def windows(x):  # k*k shifted (N, G, H, W, D) views of (N, G*D, H, W), zero borders
        return [t.permute(0, 1, 3, 4, 2)
                for t in _grouped_windows(x, n, g, h, w, kernel_size, dilation)]

    q = query.reshape(n, g, m // g, h, w).permute(0, 1, 3, 4, 2).unsqueeze(-2)  # (.., 1, Dq)
    per_head = pos.reshape(kk, g, 1, 1, m // g) if pos is not None else None
    logits = []
    for o, k in enumerate(windows(key)):  # Eq. 3: q . (k_o + pos_o)
        if per_head is not None:
            k = k + per_head[o]
        logits.append(torch.matmul(q, k.unsqueeze(-1)).reshape(n, g, 1, h, w))
    inside = _inside_mask(query, h, w, kernel_size, dilation)
    weights = torch.cat(logits, dim=2).masked_fill(~inside, float("-inf")).softmax(dim=2)
    out = None
    for o, v in enumerate(windows(value)):  # Eq. 1: sum_o w_o v_o, (1 x 1) @ (1 x C/G) each
        term = torch.matmul(weights[:, :, o, :, :, None, None], v.unsqueeze(-2))
        out = term if out is None else out + term
    return out.reshape(n, g, h, w, c // g).permute(0, 1, 4, 2, 3).reshape(n, c, h, w)


def _block_size(r: int) -> int:
    # A query meets (B + 2r)^2 halo keys where its window has (2r + 1)^2, so small blocks waste
    # less of the matrix products; but each map is gathered (B + 2r)^2 / B^2 times over. Under
    # onnxruntime's CPU provider 4 x 4 blocks ran fastest for k = 3 and 7 (8 x 8 took about
    # 1.25x as long, 2 x 2 longer still); at least r, so that the halo stays within 9x a block.
    return max(4, r)


@functools.lru_cache(maxsize=16)
def _window_tables(kernel_size: int):
    """What the halo form needs that depends on kernel_size alone (numpy, so that a trace
    records each as one constant), for B x B blocks and their L x L halos, L = B + 2r:

    - window (B*B, L*L) bool: the halo pixel is in the query's k x k window;
    - pos_index (B*B*L*L,) int64: for each (query, halo pixel) the flat index of its positional
      logit in a (B*B, k*k + 1) table whose last column is zero (outside the window).
    """
    r, kk = kernel_size // 2, kernel_size * kernel_size
    b = _block_size(r)
    a, u = np.arange(b), np.arange(b + 2 * r)
    diff = u[None, :] - a[:, None]  # halo index - query index along one axis; window: 0..2r
    inside = (diff >= 0) & (diff <= 2 * r)
    window = (inside[:, None, :, None] & inside[None, :, None, :]).reshape(b * b, -1)
    offset = (diff[:, None, :, None] * kernel_size + diff[None, :, None, :]).reshape(b * b, -1)
    offset = np.where(window, offset, kk)  # row-major offset index, as the rows of pos
    pos_index = (np.arange(b * b)[:, None] * (kk + 1) + offset).reshape(-1)
    return window, pos_index


def _halo_tables(h, w, kernel_size: int, device):
    """The size-dependent indices of the halo form, for nbH x nbW blocks of B x B covering the
    H x W map (tensor ops on the sizes, so that a trace follows the size it is run at):

    - block (blocks*B*B,), halo (blocks*L*L,), inverse (H*W,): int64 gather indices, of each
      block's queries into the zero-padded (nbH*B) x (nbW*B) map, of each block's halo into
      the map padded by r more on every side, and of each map pixel into the blocks' output;
    - on_map (blocks, 1, L*L) bool: the halo pixel lies on the map.
    """
    r = kernel_size // 2
    b = _block_size(r)
    length = b + 2 * r
    nbh, nbw = (h + b - 1) // b, (w + b - 1) // b

    def arange(end):
        return torch.arange(end, device=device)

    y0 = (arange(nbh) * b)[:, None, None, None]  # top-left pixel of each block
    x0 = (arange(nbw) * b)[None, :, None, None]
    a, u = arange(b), arange(length)
    block = ((y0 + a[:, None]) * (nbw * b) + x0 + a[None, :]).reshape(-1)
    halo = ((y0 + u[:, None]) * (nbw * b + 2 * r) + x0 + u[None, :]).reshape(-1)
    yy, xx = arange(h)[:, None], arange(w)[None, :]
    inverse = (((yy // b) * nbw + xx // b) * (b * b) + (yy % b) * b + xx % b).reshape(-1)
    # halo pixel u of a block starting at y0 is map row y0 - r + u
    rows = y0[:, 0, 0] - r + u[None, :]  # (nbH, L)
    cols = x0[0, :, 0] - r + u[None, :]  # (nbW, L)
    rows, cols = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    on_map = (rows[:, None, :, None] & cols[None, :, None, :]).reshape(-1, 1, length * length)
    return block, halo, inverse, on_map


def _halo_blocks(query, key, value, pos, kernel_size, dilation, num_heads):
    n, m, h, w, c = _sizes(query, value)
    g, kk = num_heads, kernel_size * kernel_size
    r = kernel_size // 2
    b = _block_size(r)
    nbh, nbw = (h + b - 1) // b, (w + b - 1) // b
    blocks, dq, dv = nbh * nbw, m // g, c // g
    block, halo, inverse, on_map = _halo_tables(h, w, kernel_size, query.device)
    window, pos_index = (torch.from_numpy(t).to(query.device) for t in _window_tables(kernel_size))
    keep = window[None] & on_map

    def channels_last(x, pad):  # (N, D, H, W) zero-padded by (left, right, top, bottom)
        x = F.pad(x, pad).permute(0, 2, 3, 1)
        return x.reshape(n, -1, x.shape[3])  # (N, pixels, D)

    def split_heads(x, rows, d):  # (N, blocks*rows, G*d) -> (N*G, blocks, rows, d)
        if g == 1:
            return x.reshape(n, blocks, rows, d)
        x = x.reshape(n, blocks, rows, g, d).permute(0, 3, 1, 2, 4)
        return x.reshape(n * g, blocks, rows, d)

    # Channels last, so that each gathered pixel is one contiguous run of channels.
    to_blocks = (0, nbw * b - w, 0, nbh * b - h)
    to_halos = (r, nbw * b - w + r, r, nbh * b - h + r)
    q = split_heads(channels_last(query, to_blocks)[:, block], b * b, dq)
    k = split_heads(channels_last(key, to_halos)[:, halo], -1, dq)
    logits = torch.matmul(q, k.transpose(-1, -2))  # (N*G, blocks, B*B, L*L)
    if pos is not None:
        per_head = pos.reshape(kk, g, dq).permute(1, 2, 0)  # (G, Dq, k*k)
        qp = torch.matmul(q.reshape(n, g, -1, dq), per_head[None])  # (N, G, blocks*B*B, k*k)
        qp = F.pad(qp, (0, 1)).reshape(n * g, blocks, -1)
        logits = logits + qp[:, :, pos_index].reshape(logits.shape)
    # A finite fill: the padding pixels of the last blocks may have no on-map offset, and their
    # rows (dropped by `inverse`) must not be NaN; every real pixel has its centre on the map.
    weights = logits.masked_fill(~keep, torch.finfo(logits.dtype).min).softmax(dim=-1)
    v = split_heads(channels_last(value, to_halos)[:, halo], -1, dv)
    out = torch.matmul(weights, v)  # (N*G, blocks, B*B, Dv)
    if g > 1:
        out = out.reshape(n, g, blocks, b * b, dv).permute(0, 2, 3, 1, 4)
    out = out.reshape(n, blocks * b * b, c)[:, inverse]  # (N, H*W, C)
    return out.reshape(n, h, w, c).permute(0, 3, 1, 2)


# Any device and floating dtype; rse_attention selects it by itself while tracing, scripting or
# exporting.
IMPL = RSEImpl("export", rse_attention_export, exportable=True)
