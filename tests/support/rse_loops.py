"""A deliberately slow, loop-based statement of rse_attention's definition, for tests only."""
import math

import torch


def rse_loops(query, key, value, pos=None, kernel_size=7, dilation=1, num_heads=1):
    """Python loops over pixels and window offsets, in float64; see rse_attention's docstring."""
    q, k, v = query.double(), key.double(), value.double()
    p = pos.double() if pos is not None else None
    n, m, h, w = q.shape
    c = v.shape[1]
    r = kernel_size // 2
    mh, ch = m // num_heads, c // num_heads
    offsets = [(dy * dilation, dx * dilation) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    out = torch.zeros(n, c, h, w, dtype=torch.float64)
    for b in range(n):
        for g in range(num_heads):
            ms, cs = slice(g * mh, (g + 1) * mh), slice(g * ch, (g + 1) * ch)
            for i in range(h):
                for j in range(w):
                    logits, vals = [], []
                    for o, (dy, dx) in enumerate(offsets):
                        y, x = i + dy, j + dx
                        if not (0 <= y < h and 0 <= x < w):
                            continue
                        kk = k[b, ms, y, x] + (p[o, ms] if p is not None else 0)
                        logits.append(float((q[b, ms, i, j] * kk).sum()))
                        vals.append(v[b, cs, y, x])
                    mx = max(logits)
                    ws = [math.exp(l - mx) for l in logits]
                    s = sum(ws)
                    out[b, cs, i, j] = sum(wt / s * vv for wt, vv in zip(ws, vals))
    return out
