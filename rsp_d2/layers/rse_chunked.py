"""Memory-efficient RSE (Eq. 1-3) for any device and floating dtype: ``impl="chunked"``.

The reference unfolds key and value into (k*k, M, H, W) / (k*k, C, H, W) tensors. Here the k*k
window offsets are visited one at a time: for offset (dy, dx) the pixels whose neighbour
(i + dy, j + dx) lies inside the map form one rectangle, so that offset's logits and its share
of the aggregation are products of two shifted *views* (no padding, no copy). The map is cut
into bands of rows; a band's logits, softmax and output depend only on its own rows (and the
keys/values r*dilation rows around them), so bands are independent tasks: they keep their
working set in cache across the k*k offsets and, on CPU, run in parallel Python threads.

The largest tensors created are the (N, heads, k*k, H, W) logits/weights; a custom autograd
Function saves only the inputs and the softmax weights and recomputes the rest.
"""
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .rse_common import compute_dtype, enter_backend, input_grads, split_inputs
from .rse_registry import RSEImpl

__all__ = ["rse_attention_chunked", "IMPL"]

# Elements of query+key+value+output rows per band: sized so that a band stays in a core's
# share of the cache across the k*k offsets. Smaller bands pay for more Python-level ops,
# whole maps fall out of cache between offsets (tools/benchmark.py measures both).
_BAND_ELEMENTS = 3 * 2 ** 20


# Below this many elements of query+key+value+output, starting threads costs more than it saves.
_PARALLEL_MIN_ELEMENTS = 2 ** 18


def _band_rows(query: torch.Tensor, value: torch.Tensor, workers: int) -> int:
    n, m, h, w = query.shape
    rows = max(1, _BAND_ELEMENTS // (n * w * (2 * m + 2 * value.shape[1])))
    # At least two bands per worker, so that a stalled worker's share can be taken over.
    return min(rows, max(1, -(-h // (2 * workers))))


def _offsets(kernel_size: int, dilation: int) -> List[Tuple[int, int]]:
    """(dy, dx) of the k*k window positions in row-major order, the row order of `pos`."""
    r = kernel_size // 2
    return [(dy * dilation, dx * dilation) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def _span(lo: int, hi: int, shift: int, size: int) -> Optional[Tuple[slice, slice]]:
    """Indices in [lo, hi) whose partner at +shift is inside [0, size), and those partners;
    None if there are none."""
    a, b = max(lo, -shift), min(hi, size - shift)
    if a >= b:
        return None
    return slice(a, b), slice(a + shift, b + shift)


Item = Tuple[int, slice, slice, slice, slice]  # (o, query rows, query cols, key rows, key cols)


def _bands(h: int, w: int, kernel_size: int, dilation: int, band_rows: int,
           by_key: bool = False) -> List[Tuple[int, int, List[Item]]]:
    """[(lo, hi, items)] per band of rows [lo, hi): the offsets o with at least one pixel pair
    (query p, key p + offset_o) on the map, and the slices of those pairs. The band holds the
    query rows, or with `by_key` the key rows (backward scatters to keys without races)."""
    out = []
    sign = -1 if by_key else 1
    for lo in range(0, h, band_rows):
        hi = min(lo + band_rows, h)
        items = []
        for o, (dy, dx) in enumerate(_offsets(kernel_size, dilation)):
            rows, cols = _span(lo, hi, sign * dy, h), _span(0, w, sign * dx, w)
            if rows is None or cols is None:
                continue
            if by_key:  # the band's slices are the keys', their partners the queries'
                items.append((o, rows[1], cols[1], rows[0], cols[0]))
            else:
                items.append((o, rows[0], cols[0], rows[1], cols[1]))
        out.append((lo, hi, items))
    return out


def _outside_mask(h, w, kernel_size, dilation, device) -> torch.Tensor:
    """(k*k, H, W) bool, True where the window position falls outside the map."""
    outside = torch.ones(kernel_size * kernel_size, h, w, dtype=torch.bool, device=device)
    for o, rq, cq, _, _ in _bands(h, w, kernel_size, dilation, h)[0][2]:
        outside[o, rq, cq] = False
    return outside


def _single_threaded_ops():
    # torch.set_num_threads sets this thread's OpenMP/MKL thread count (and the default for
    # threads not yet started); the caller restores the default when the pool is done.
    torch.set_num_threads(1)


def _run_bands(fn: Callable, bands: Sequence, device: torch.device, workers: int):
    """fn(band) for every band. On CPU with several threads, the bands run in parallel Python
    threads (torch ops release the GIL) whose ops are single-threaded: faster than
    OpenMP-parallel ops, by far on a loaded machine, where every one of the many small OpenMP
    regions per call waits for a descheduled thread."""
    def run(band):
        # Grad mode is thread-local: worker threads start with it on.
        with torch.no_grad():
            fn(band)

    if device.type != "cpu" or workers <= 1 or len(bands) <= 1:
        for band in bands:
            run(band)
        return
    try:
        with ThreadPoolExecutor(min(workers, len(bands)), initializer=_single_threaded_ops) as pool:
            list(pool.map(run, bands))
    finally:
        torch.set_num_threads(workers)


def _dot_into(dst, a, b, buf):
    """dst = sum over dim 2 of a * b, for (N, G, D, h, w) views a, b and (N, G, h, w) view dst.
    The product goes to a per-band scratch `buf`: a fresh temporary per offset would be a large
    allocation returned to the OS on free and page-faulted in again by the next offset."""
    prod = buf[..., :a.shape[-2], :a.shape[-1]]
    torch.mul(a, b, out=prod)
    torch.sum(prod, dim=2, out=dst)


def _scratch(x: torch.Tensor, rows: int) -> torch.Tensor:
    n, g, d, h, w = x.shape
    return x.new_empty(n, g, d, min(rows, h), w)


def _forward(q, k, v, pos, kernel_size, dilation, band_rows, workers):
    """Eq. 1-3 on head-split q, k: (N, G, M/G, H, W), v: (N, G, C/G, H, W), pos (k*k, G, M/G).

    Returns (out like v, weights (N, G, k*k, H, W), zero outside the map)."""
    n, g, _, h, w = q.shape
    weights = q.new_zeros(n, g, kernel_size * kernel_size, h, w)
    out = torch.zeros_like(v)
    outside = _outside_mask(h, w, kernel_size, dilation, q.device)

    def band(task):
        lo, hi, items = task
        buf = _scratch(q, hi - lo)
        for o, rq, cq, rk, ck in items:  # Eq. 2: logit_o = q . k_o
            _dot_into(weights[:, :, o, rq, cq], q[..., rq, cq], k[..., rk, ck], buf)
        logits = weights[:, :, :, lo:hi]
        if pos is not None:  # Eq. 3: + q . pos_o, a small matmul over the band
            logits += torch.einsum("ngmhw,ogm->ngohw", q[..., lo:hi, :], pos)
        logits.masked_fill_(outside[:, lo:hi], float("-inf"))
        # Stable softmax over the window, in place: subtract the per-pixel max before exp. The
        # centre offset is always on the map, so the max is finite and no row is all -inf.
        logits.sub_(logits.amax(dim=2, keepdim=True)).exp_()
        logits.div_(logits.sum(dim=2, keepdim=True))
        for o, rq, cq, rk, ck in items:  # Eq. 1: out += w_o v_o
            out[..., rq, cq].addcmul_(weights[:, :, o:o + 1, rq, cq], v[..., rk, ck])

    _run_bands(band, _bands(h, w, kernel_size, dilation, band_rows), q.device, workers)
    return out, weights


def _backward(q, k, v, pos, weights, grad_out, kernel_size, dilation, band_rows, workers):
    """Gradients of _forward's out for head-split tensors; returns (dq, dk, dv, d_logits)."""
    h, w = q.shape[-2:]
    d_logits = torch.zeros_like(weights)
    dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)

    def query_band(task):
        lo, hi, items = task
        buf = _scratch(grad_out, hi - lo)
        for o, rq, cq, rk, ck in items:  # dL/dw_o = g . v_o
            _dot_into(d_logits[:, :, o, rq, cq], grad_out[..., rq, cq], v[..., rk, ck], buf)
        # Softmax backward, complete for the band's pixels: dlogit = w (dw - sum_o w dw).
        wb, db = weights[:, :, :, lo:hi], d_logits[:, :, :, lo:hi]
        db.sub_((wb * db).sum(dim=2, keepdim=True)).mul_(wb)
        dqb = dq[..., lo:hi, :]
        if pos is not None:  # dq = sum_o dlogit_o (k_o + pos_o)
            dqb.copy_(torch.einsum("ngohw,ogm->ngmhw", db, pos))
        else:
            dqb.zero_()
        for o, rq, cq, rk, ck in items:
            dq[..., rq, cq].addcmul_(d_logits[:, :, o:o + 1, rq, cq], k[..., rk, ck])

    def key_band(task):  # each key pixel gathers from the k*k query pixels that see it
        _, _, items = task
        for o, rq, cq, rk, ck in items:
            dk[..., rk, ck].addcmul_(d_logits[:, :, o:o + 1, rq, cq], q[..., rq, cq])
            dv[..., rk, ck].addcmul_(weights[:, :, o:o + 1, rq, cq], grad_out[..., rq, cq])

    _run_bands(query_band, _bands(h, w, kernel_size, dilation, band_rows), q.device, workers)
    _run_bands(key_band, _bands(h, w, kernel_size, dilation, band_rows, by_key=True), q.device, workers)
    return dq, dk, dv, d_logits


class _ChunkedRSE(torch.autograd.Function):
    """Saves the inputs and the (N, G, k*k, H, W) weights; backward recomputes the shifted
    products offset by offset, so no (k*k, M or C, H, W) tensor ever exists."""

    @staticmethod
    def forward(ctx, query, key, value, pos, kernel_size, dilation, num_heads, band_rows, workers):
        q, k, v, p = split_inputs((query, key, value), pos, num_heads, compute_dtype(query.dtype))
        out, weights = _forward(q, k, v, p, kernel_size, dilation, band_rows, workers)
        ctx.save_for_backward(query, key, value, pos, weights)
        ctx.args = (kernel_size, dilation, num_heads, band_rows, workers)
        return out.reshape(value.shape).to(value.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        query, key, value, pos, weights = ctx.saved_tensors
        kernel_size, dilation, num_heads, band_rows, workers = ctx.args
        q, k, v, go, p = split_inputs((query, key, value, grad_out), pos, num_heads, weights.dtype)
        dq, dk, dv, d_logits = _backward(q, k, v, p, weights, go, kernel_size, dilation,
                                         band_rows, workers)
        return (*input_grads(ctx, dq, dk, dv, d_logits, q), None, None, None, None, None)


def rse_attention_chunked(query, key, value, pos=None, kernel_size=7, dilation=1, num_heads=1,
                          band_rows: Optional[int] = None):
    """Same contract as :func:`rsp_d2.layers.rse_attention` (Eq. 1-3, masked borders, no scaling).

    Args:
        query, key: (N, M, H, W); value: (N, C, H, W); pos: (k*k, M) or None.
        band_rows: rows per band, by default sized to keep a band in cache (a speed knob
            only; results do not depend on it).

    Returns:
        (N, C, H, W) in value's dtype; fp16/bf16 inputs are computed in float32.
    Extra memory: O((M + C) * H * W + heads * k*k * H * W), never k*k * (M or C) * H * W.
    """
    enter_backend("chunked")
    on_cpu = query.device.type == "cpu"
    n, m, h, w = query.shape
    big = n * (2 * m + 2 * value.shape[1]) * h * w >= _PARALLEL_MIN_ELEMENTS
    workers = torch.get_num_threads() if on_cpu and big else 1
    if band_rows is None:
        # Off CPU there is no cache to fit and every band costs kernel launches: one band.
        band_rows = _band_rows(query, value, workers) if on_cpu else query.shape[2]
    return _ChunkedRSE.apply(query, key, value, pos, kernel_size, dilation, num_heads,
                             band_rows, workers)


# Any device and floating dtype; pure PyTorch, so the self-check's yardstick.
IMPL = RSEImpl("chunked", rse_attention_chunked, trusted=True)
