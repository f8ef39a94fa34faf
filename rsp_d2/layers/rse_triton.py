"""Fused Triton kernels for the RSE relation (Eq. 1-3): ``impl="triton"`` (CUDA tensors only).

Forward: one program per tile of BLOCK_P pixels of one (image, head). It walks the k*k window
offsets once, computing each logit q . (k_o + pos_o) (Eq. 2-3), an online softmax (running max
and sum, rescaling the accumulator when the max grows) and the weighted sum of the values
(Eq. 1), so neither the unfolded key/value nor the logits are ever stored; it writes the output
and the per-pixel log-sum-exp.

Backward (no atomics): a query-centric kernel recomputes the weights w_o = exp(logit_o - lse),
forms dlogit_o = w_o (g . v_o - g . out) and dq; it stores w and dlogit, (N, G, k*k, H*W)
float32, the only extra tensors. A key-centric kernel then gathers, for each key pixel, the
contributions of the k*k query pixels that see it: dk = sum_o dlogit_o q, dv = sum_o w_o g.
d pos is a small einsum of dlogit and q.

Inputs are float16, bfloat16 or float32; accumulation is in float32. Out-of-map neighbours are
excluded from the softmax, as in the reference.
"""
from typing import Optional

import torch

from .rse_common import enter_backend
from .rse_registry import RSEImpl

__all__ = ["rse_attention_triton", "HAS_TRITON", "IMPL"]

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # the pure-PyTorch implementations still work
    HAS_TRITON = False

_BLOCK_P = 32


def _missing() -> str:
    return "" if HAS_TRITON else "the `triton` package is not installed"


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


if HAS_TRITON:
    # (Indexing with None, x[:, None], breaks triton 2.3.1's interpreter; expand_dims works.)

    @triton.jit
    def _col(x):
        return tl.expand_dims(x, 1)

    @triton.jit
    def _row(x):
        return tl.expand_dims(x, 0)

    @triton.jit
    def _tile(H, W, M, C, G, MH: tl.constexpr, CH: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """This program's (batch, head) and pixel tile: pixel indices p (BLOCK_P,), their rows i
        and columns j, the channel ranges rm (BLOCK_M,), rc (BLOCK_C,) with their masks, and
        the offsets m_off (1, BLOCK_M), c_off (1, BLOCK_C) of this head's channel planes in
        (N, M, H, W) and (N, C, H, W) maps."""
        pid_p, pid_ng = tl.program_id(0), tl.program_id(1)
        n, g = pid_ng // G, pid_ng % G
        hw = H * W
        p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        rm, rc = tl.arange(0, BLOCK_M), tl.arange(0, BLOCK_C)
        m_off = n * M * hw + _row(g * MH + rm) * hw
        c_off = n * C * hw + _row(g * CH + rc) * hw
        return (pid_ng, g, hw, p, p < hw, p // W, p % W, rm, rc, rm < MH, rc < CH, m_off, c_off)

    @triton.jit
    def _window_key(k_base, pos_ptr, o, i, j, in_map, H, W, M, g, rm, mm, MH: tl.constexpr,
                    K: tl.constexpr, DIL: tl.constexpr, HAS_POS: tl.constexpr):
        """Window position o of each pixel (i, j): whether it is on the map, its flat index,
        and the key there plus pos_o (Eq. 3), (BLOCK_P, BLOCK_M) in float32, 0 off the map."""
        # Row-major (dy, dx) of window position o, the row order of pos.
        y, x = i + (o // K - K // 2) * DIL, j + (o % K - K // 2) * DIL
        ok = in_map & (y >= 0) & (y < H) & (x >= 0) & (x < W)
        src = y * W + x
        key = tl.load(k_base + _col(src), mask=_col(ok) & _row(mm), other=0.0).to(tl.float32)
        if HAS_POS:
            pos = tl.load(pos_ptr + o * M + g * MH + rm, mask=mm, other=0.0)
            key += _row(pos.to(tl.float32))
        return ok, src, key

    @triton.jit
    def _rse_fwd_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, out_ptr, lse_ptr,
                        H, W, M, C, G,
                        MH: tl.constexpr, CH: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, K: tl.constexpr,
                        DIL: tl.constexpr, HAS_POS: tl.constexpr):
        pid_ng, g, hw, p, in_map, i, j, rm, rc, mm, mc, m_off, c_off = _tile(
            H, W, M, C, G, MH, CH, BLOCK_M, BLOCK_C, BLOCK_P)
        q_base, k_base, v_base = q_ptr + m_off, k_ptr + m_off, v_ptr + c_off
        q = tl.load(q_base + _col(p), mask=_col(in_map) & _row(mm), other=0.0).to(tl.float32)

        m_run = tl.full((BLOCK_P,), float("-inf"), tl.float32)
        l_run = tl.zeros((BLOCK_P,), tl.float32)
        acc = tl.zeros((BLOCK_P, BLOCK_C), tl.float32)
        for o in range(K * K):
            ok, src, key = _window_key(k_base, pos_ptr, o, i, j, in_map, H, W, M, g, rm, mm, MH, K,
                                       DIL, HAS_POS)
            logit = tl.where(ok, tl.sum(q * key, axis=1), float("-inf"))
            m_new = tl.maximum(m_run, logit)
            # Until a pixel has seen one on-map offset its max is -inf; shift by 0 then so
            # exp() gives 0 instead of exp(-inf + inf) = nan.
            shift = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_run - shift)
            e = tl.exp(logit - shift)
            val = tl.load(v_base + _col(src), mask=_col(ok) & _row(mc), other=0.0).to(tl.float32)
            acc = acc * _col(alpha) + _col(e) * val
            l_run = l_run * alpha + e
            m_run = m_new
        # The centre offset is always on the map, so l_run >= 1 for every real pixel.
        l_safe = tl.where(in_map, l_run, 1.0)
        out = acc / _col(l_safe)
        o_ptrs = out_ptr + c_off + _col(p)
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=_col(in_map) & _row(mc))
        tl.store(lse_ptr + pid_ng * hw + p, (m_run + tl.log(l_safe)).to(lse_ptr.dtype.element_ty),
                 mask=in_map)

    @triton.jit
    def _rse_bwd_query_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, out_ptr, gout_ptr, lse_ptr,
                              w_ptr, dlogit_ptr, dq_ptr,
                              H, W, M, C, G,
                              MH: tl.constexpr, CH: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, K: tl.constexpr,
                              DIL: tl.constexpr, HAS_POS: tl.constexpr):
        pid_ng, g, hw, p, in_map, i, j, rm, rc, mm, mc, m_off, c_off = _tile(
            H, W, M, C, G, MH, CH, BLOCK_M, BLOCK_C, BLOCK_P)
        q_base, k_base = q_ptr + m_off, k_ptr + m_off
        pm, pc = _col(in_map) & _row(mm), _col(in_map) & _row(mc)
        q = tl.load(q_base + _col(p), mask=pm, other=0.0).to(tl.float32)
        gout = tl.load(gout_ptr + c_off + _col(p), mask=pc, other=0.0).to(tl.float32)
        out = tl.load(out_ptr + c_off + _col(p), mask=pc, other=0.0).to(tl.float32)
        # sum_o w_o (g . v_o) = g . out: the softmax-backward correction term.
        g_dot_out = tl.sum(gout * out, axis=1)
        lse = tl.load(lse_ptr + pid_ng * hw + p, mask=in_map, other=0.0).to(tl.float32)
        dq = tl.zeros((BLOCK_P, BLOCK_M), tl.float32)
        for o in range(K * K):
            ok, src, key = _window_key(k_base, pos_ptr, o, i, j, in_map, H, W, M, g, rm, mm, MH, K,
                                       DIL, HAS_POS)
            w = tl.where(ok, tl.exp(tl.sum(q * key, axis=1) - lse), 0.0)
            val = tl.load(v_ptr + c_off + _col(src), mask=_col(ok) & _row(mc), other=0.0)
            val = val.to(tl.float32)
            dlogit = w * (tl.sum(gout * val, axis=1) - g_dot_out)
            dq += _col(dlogit) * key
            wo = (pid_ng * K * K + o) * hw + p
            tl.store(w_ptr + wo, w.to(w_ptr.dtype.element_ty), mask=in_map)
            tl.store(dlogit_ptr + wo, dlogit.to(dlogit_ptr.dtype.element_ty), mask=in_map)
        tl.store(dq_ptr + m_off + _col(p),
                 dq.to(dq_ptr.dtype.element_ty), mask=pm)

    @triton.jit
    def _rse_bwd_key_kernel(q_ptr, gout_ptr, w_ptr, dlogit_ptr, dk_ptr, dv_ptr,
                            H, W, M, C, G,
                            MH: tl.constexpr, CH: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, K: tl.constexpr,
                            DIL: tl.constexpr):
        pid_ng, g, hw, p, in_map, i, j, rm, rc, mm, mc, m_off, c_off = _tile(
            H, W, M, C, G, MH, CH, BLOCK_M, BLOCK_C, BLOCK_P)
        dk = tl.zeros((BLOCK_P, BLOCK_M), tl.float32)
        dv = tl.zeros((BLOCK_P, BLOCK_C), tl.float32)
        for o in range(K * K):
            # The query pixel whose offset-o neighbour is this key pixel.
            y, x = i - (o // K - K // 2) * DIL, j - (o % K - K // 2) * DIL
            ok = in_map & (y >= 0) & (y < H) & (x >= 0) & (x < W)
            src = y * W + x
            wo = (pid_ng * K * K + o) * hw + src
            dlogit = tl.load(dlogit_ptr + wo, mask=ok, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + wo, mask=ok, other=0.0).to(tl.float32)
            q = tl.load(q_ptr + m_off + _col(src), mask=_col(ok) & _row(mm), other=0.0)
            gout = tl.load(gout_ptr + c_off + _col(src), mask=_col(ok) & _row(mc), other=0.0)
            q, gout = q.to(tl.float32), gout.to(tl.float32)
            dk += _col(dlogit) * q
            dv += _col(w) * gout
        tl.store(dk_ptr + m_off + _col(p), dk.to(dk_ptr.dtype.element_ty),
                 mask=_col(in_map) & _row(mm))
        tl.store(dv_ptr + c_off + _col(p), dv.to(dv_ptr.dtype.element_ty),
                 mask=_col(in_map) & _row(mc))


def _launch_args(query, value, kernel_size, dilation, num_heads):
    """(constexpr meta-parameters, grid, runtime sizes) shared by the three kernels."""
    n, m, h, w = query.shape
    c = value.shape[1]
    mh, ch = m // num_heads, c // num_heads
    meta = dict(MH=mh, CH=ch, BLOCK_M=_pow2(mh), BLOCK_C=_pow2(ch), BLOCK_P=_BLOCK_P,
                K=kernel_size, DIL=dilation)
    return meta, (triton.cdiv(h * w, _BLOCK_P), n * num_heads), (h, w, m, c, num_heads)


class _TritonRSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, pos, kernel_size, dilation, num_heads):
        query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
        pos_c = pos.contiguous() if pos is not None else query  # dummy pointer when absent
        meta, grid, dims = _launch_args(query, value, kernel_size, dilation, num_heads)
        n, _, h, w = query.shape
        # float32 output kept for backward: g . out there is a difference of similar terms,
        # and an output rounded to half precision would be amplified by it.
        out = torch.empty(value.shape, device=value.device, dtype=torch.float32)
        lse = torch.empty(n * num_heads, h * w, device=query.device, dtype=torch.float32)
        _rse_fwd_kernel[grid](query, key, value, pos_c, out, lse, *dims,
                              HAS_POS=pos is not None, **meta)
        ctx.save_for_backward(query, key, value, pos, out, lse)
        ctx.args = (kernel_size, dilation, num_heads)
        return out.to(value.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        query, key, value, pos, out, lse = ctx.saved_tensors
        kernel_size, dilation, num_heads = ctx.args
        grad_out = grad_out.contiguous()
        pos_c = pos.contiguous() if pos is not None else query
        meta, grid, dims = _launch_args(query, value, kernel_size, dilation, num_heads)
        n, m, h, w = query.shape
        kk = kernel_size * kernel_size
        weights = torch.empty(n, num_heads, kk, h * w, device=query.device, dtype=lse.dtype)
        d_logits = torch.empty_like(weights)
        dq, dk, dv = torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)
        _rse_bwd_query_kernel[grid](query, key, value, pos_c, out, grad_out, lse, weights,
                                    d_logits, dq, *dims, HAS_POS=pos is not None, **meta)
        _rse_bwd_key_kernel[grid](query, grad_out, weights, d_logits, dk, dv, *dims, **meta)
        d_pos = None
        if pos is not None and ctx.needs_input_grad[3]:
            qh = query.reshape(n, num_heads, m // num_heads, h * w).to(lse.dtype)
            d_pos = torch.einsum("ngop,ngmp->ogm", d_logits, qh).reshape(pos.shape).to(pos.dtype)
        return dq, dk, dv, d_pos, None, None, None


def rse_attention_triton(query, key, value, pos: Optional[torch.Tensor] = None, kernel_size=7,
                         dilation=1, num_heads=1):
    """Same contract as :func:`rsp_d2.layers.rse_attention` (Eq. 1-3), fused in Triton.

    Args:
        query, key: (N, M, H, W); value: (N, C, H, W); pos: (k*k, M) or None.
    Returns:
        (N, C, H, W) in value's dtype. Runs wherever Triton can launch: CUDA tensors, or any
        tensors under ``TRITON_INTERPRET=1`` (how the CPU tests run it).
    """
    enter_backend("triton", _missing())
    return _TritonRSE.apply(query, key, value, pos, kernel_size, dilation, num_heads)


# CUDA only: "auto" must never pick it for CPU tensors (they need the interpreter). No float64:
# the kernels accumulate in float32.
IMPL = RSEImpl("triton", rse_attention_triton, devices=("cuda",),
               dtypes=(torch.float16, torch.bfloat16, torch.float32), requirement=_missing)
