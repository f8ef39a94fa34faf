r"""Are the relation weights content-dependent, or one positional pattern everywhere?

Each pixel p of an RSP/SELF module has k x k softmax weights w_p(o) over its window offsets o
(Eq. 2-3); offsets falling outside the map are masked (weight 0) and the rest renormalized. A
purely positional relation is one pattern b(o) for every pixel, restricted to the pixel's valid
offsets and renormalized:

    \hat w_p(o) = b(o) / \sum_{o' valid at p} b(o'),   o valid at p.

b is fitted to the maps by a fixed-point iteration that is exact for such maps (masked borders
included, so a positional map on a small coarse level is not mistaken for content). Scores:

* ``content_fraction`` = \sum (w - \hat w)^2 / \sum (w - u)^2 over valid (p, o), u_p = 1/|valid
  at p| (uniform): the share of the weights' departure from uniform that the fixed pattern does
  not explain. 0 for a positional relation, up to ~1 when the pattern explains nothing.
* ``pattern_explained`` = 1 - content_fraction.
* ``kl`` = mean over pixels of KL(w_p || \hat w_p) in nats; 0 for a positional relation.
"""
from typing import Dict, Optional

import numpy as np

__all__ = ["offset_validity", "relation_content", "trace_relation_content"]

_FIT_ITERATIONS = 50
_EPS = 1e-12


def offset_validity(kernel_size: int, dilation: int, height: int, width: int) -> np.ndarray:
    """(k*k, H, W) bool: offset o = (dy, dx) * dilation (row-major, dy, dx in -r..r) of pixel
    (i, j) lies inside the H x W map."""
    r = kernel_size // 2
    d = np.arange(-r, r + 1) * dilation
    rows = np.arange(height)[None, :] + d[:, None]  # (k, H)
    cols = np.arange(width)[None, :] + d[:, None]  # (k, W)
    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]  # (k, k, H, W)
    return valid.reshape(kernel_size * kernel_size, height, width)


def relation_content(weights, valid: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Content-vs-position scores of relation maps (see the module docstring).

    Args:
        weights: (P, K) or (K, H, W) or (heads, K, H, W) array/tensor: K = k*k softmax weights
            per pixel (each pixel's valid weights sum to 1); heads are treated as more pixels
            with their own pattern.
        valid: bool array of the same shape, True where the offset lies inside the map; by
            default ``weights > 0`` (softmax is positive wherever it is not masked).

    Returns:
        {"content_fraction", "pattern_explained", "kl", "pixels"}.
    """
    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights,
                   dtype=np.float64)
    if w.ndim not in (2, 3, 4):
        raise ValueError(f"weights of shape {w.shape}: expected (P, K), (K, H, W) or "
                         "(heads, K, H, W)")
    v = (w > 0) if valid is None else np.broadcast_to(np.asarray(valid, dtype=bool), w.shape)
    if w.ndim == 3:
        w, v = w[None], v[None]
    if w.ndim == 4:  # (heads, K, H, W) -> per head (H*W, K)
        heads, k = w.shape[:2]
        w = w.reshape(heads, k, -1).transpose(0, 2, 1)
        v = v.reshape(heads, k, -1).transpose(0, 2, 1)
    else:
        w, v = w[None], v[None]
    res = tot = kl = 0.0
    pixels = 0
    for wh, vh in zip(w, v):  # (P, K) each
        wh = np.where(vh, wh, 0.0)
        pattern = _fit_pattern(wh, vh)
        pred = _restricted(pattern, vh)
        uniform = vh / np.maximum(vh.sum(1, keepdims=True), 1)
        res += float((((wh - pred) * vh) ** 2).sum())
        tot += float((((wh - uniform) * vh) ** 2).sum())
        ratio = np.where(vh & (wh > 0), wh / np.maximum(pred, _EPS), 1.0)
        kl += float((wh * np.log(ratio)).sum())
        pixels += wh.shape[0]
    frac = res / tot if tot > 0 else 0.0
    return {"content_fraction": frac, "pattern_explained": 1.0 - frac,
            "kl": kl / max(pixels, 1), "pixels": pixels}


def _restricted(pattern: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(P, K) `pattern` restricted to each pixel's valid offsets and renormalized."""
    b = np.where(valid, pattern[None, :], 0.0)
    return b / np.maximum(b.sum(1, keepdims=True), _EPS)


def _fit_pattern(w: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The (K,) pattern b with w ~ b restricted and renormalized: b(o) = mean over pixels with o
    valid of w_p(o) Z_p(b), Z_p = sum of b over p's valid offsets (a fixed point of
    positional maps)."""
    count = np.maximum(valid.sum(0), 1)
    b = w.sum(0) / count
    for _ in range(_FIT_ITERATIONS):
        z = np.where(valid, b[None, :], 0.0).sum(1, keepdims=True)
        b = (w * z).sum(0) / count
        b = b / max(b.sum(), _EPS)
    return b


def trace_relation_content(trace) -> Dict[str, Dict[str, float]]:
    """Scores per relation module of a :class:`~rsp_d2.visualization.trace.HeadTrace`, keyed by
    the paper's name (e.g. "RSP-43"), over the map part covering the image (padding cropped,
    validity taken on the full padded map the operation saw)."""
    out = {}
    for f in trace.relation_fusions():
        heads, k2, height, width = f.weights.shape
        valid = offset_validity(f.kernel_size, f.dilation, height, width)
        valid = np.broadcast_to(valid[None], (heads, k2, height, width))
        w = trace.valid(f.fine, f.weights).numpy()
        v = valid[..., : w.shape[-2], : w.shape[-1]]
        out[f.label] = relation_content(w, v)
    return out
