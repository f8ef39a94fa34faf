"""The RSE relation (Eq. 1-3) as fused C++ loops on the CPU: ``impl="cpp"``.

The loops (rsp_d2/layers/csrc/rse_cpu.cpp, compiled by setup.py as ``rsp_d2._C``) make one
pass over the output rows per step, with the k*k window offsets innermost, so each row's
neighbourhood stays in cache; the torch ops of ``chunked`` instead stream the whole band
through memory once per offset. Three steps forward (logits, softmax, aggregation) and four
backward, each one C++ call or one torch op:

    logits  = window_dot(q, k, pos)            (N, G, k*k, H, W), -inf off the map    Eq. 2-3
    w       = softmax(logits, dim=2)                                                  Eq. 2
    out     = window_gather(w, v)              (N, G, C/G, H, W)                      Eq. 1

Like ``chunked``, only the inputs and the (N, G, k*k, H, W) weights are saved for backward;
no k*k*M*H*W or k*k*C*H*W tensor exists. Half-precision inputs are computed in float32.
Unavailable (and skipped by ``impl="auto"``) when the extension was not built.
"""
import torch

from .rse import register_rse_impl

__all__ = ["rse_attention_cpp", "HAS_CPP_EXT"]

try:
    from rsp_d2 import _C

    HAS_CPP_EXT = True
    CPP_EXT_ERROR = ""
except ImportError as e:  # built without a compiler, or RSP_D2_NO_EXT=1
    _C = None
    HAS_CPP_EXT = False
    CPP_EXT_ERROR = str(e)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Sums of 49 products/exps lose too much in half precision.
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _heads(x: torch.Tensor, num_heads: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, G*D, H, W) -> contiguous (N, G, D, H, W) in `dtype` (no copy when already so)."""
    n, c, h, w = x.shape
    return x.to(dtype).reshape(n, num_heads, c // num_heads, h, w).contiguous()


def _pos_heads(pos, num_heads, dtype):
    """(k*k, M) -> contiguous (k*k, G, M/G), or None."""
    if pos is None:
        return None
    return pos.to(dtype).reshape(pos.shape[0], num_heads, -1).contiguous()


class _CppRSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, key, value, pos, kernel_size, dilation, num_heads):
        cdt = _compute_dtype(query.dtype)
        q, k, v = (_heads(t, num_heads, cdt) for t in (query, key, value))
        p = _pos_heads(pos, num_heads, cdt)
        logits = _C.window_dot(q, k, p, kernel_size, dilation, float("-inf"))
        # The centre offset is always on the map, so no pixel's logits are all -inf.
        weights = torch.softmax(logits, dim=2)
        del logits
        out = _C.window_gather(weights, v, None, kernel_size, dilation)
        ctx.save_for_backward(query, key, value, pos, weights)
        ctx.args = (kernel_size, dilation, num_heads)
        return out.reshape(value.shape).to(value.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        query, key, value, pos, weights = ctx.saved_tensors
        kernel_size, dilation, num_heads = ctx.args
        cdt = weights.dtype
        q, k, v, g = (_heads(t, num_heads, cdt) for t in (query, key, value, grad_out))
        p = _pos_heads(pos, num_heads, cdt)
        # dL/dw_o = g . v_o; off-map entries are multiplied by w = 0 below.
        d_logits = _C.window_dot(g, v, None, kernel_size, dilation, 0.0)
        # Softmax backward over the window: dlogit = w * (dw - sum_o w dw).
        d_logits.sub_((weights * d_logits).sum(dim=2, keepdim=True)).mul_(weights)
        dq = _C.window_gather(d_logits, k, p, kernel_size, dilation)  # sum_o dlogit_o (k_o + pos_o)
        dk = _C.window_scatter(d_logits, q, kernel_size, dilation)
        dv = _C.window_scatter(weights, g, kernel_size, dilation)
        d_pos = None
        if pos is not None and ctx.needs_input_grad[3]:  # sum over pixels of dlogit_o q
            d_pos = torch.einsum("ngohw,ngmhw->ogm", d_logits, q).reshape(pos.shape).to(pos.dtype)
        grads = [t.reshape(ref.shape).to(ref.dtype) for t, ref in ((dq, query), (dk, key), (dv, value))]
        return (*grads, d_pos, None, None, None)


def rse_attention_cpp(query, key, value, pos=None, kernel_size=7, dilation=1, num_heads=1):
    """Same contract as :func:`rsp_d2.layers.rse_attention` (Eq. 1-3, masked borders, no scaling).

    Args:
        query, key: (N, M, H, W) CPU tensors; value: (N, C, H, W); pos: (k*k, M) or None.

    Returns:
        (N, C, H, W) in value's dtype; float16/bfloat16 are computed in float32. Uses
        torch.get_num_threads() threads.
    """
    if not HAS_CPP_EXT:
        raise RuntimeError(f"rse_attention_cpp: the extension rsp_d2._C is not built "
                           f"({CPP_EXT_ERROR}); reinstall with `pip install -e . "
                           f"--no-build-isolation` and a C++ compiler, or use impl='chunked'")
    return _CppRSE.apply(query, key, value, pos, kernel_size, dilation, num_heads)


register_rse_impl(
    "cpp", rse_attention_cpp,
    lambda q: HAS_CPP_EXT and q.device.type == "cpu" and q.is_floating_point())
