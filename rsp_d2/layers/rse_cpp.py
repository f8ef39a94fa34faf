"""The RSE relation (Eq. 1-3) as fused C++ loops (the extension ``rsp_d2._C``): ``impl="cpp"``.

The loops (rsp_d2/layers/csrc/rse_cpp.cpp, compiled by setup.py as ``rsp_d2._C``) make one
pass over the output rows per step, summing a register-wide block of pixels over the window
and the channels in registers, on the 2r+1 neighbour rows copied with a zero border into a
small per-thread ring (no bounds tests, no padded copy of a map); the torch ops of
``chunked`` instead stream the whole band through memory once per offset. Three steps
forward and four backward, each one C++ call or one torch op:

    logits  = window_dot(q, k, pos)            (N, G, k*k, H, W), -inf off the map    Eq. 2-3
    w       = softmax(logits, dim=2)                                                  Eq. 2
    out     = window_gather(w, v)              (N, G, C/G, H, W)                      Eq. 1

    d_logits = window_dot(g, v, softmax_weights=w)   dL/dw and the softmax's backward, one pass
    dq, dk, dv = window_gather(d_logits, k, pos), window_scatter(d_logits, q), window_scatter(w, g)

The loops come compiled for several ISAs (AVX-512F, AVX2+FMA, baseline); ``isa="auto"`` runs
the widest the CPU has (:func:`cpu_isa`).

Like ``chunked``, only the inputs and the (N, G, k*k, H, W) weights are saved for backward;
no k*k*M*H*W or k*k*C*H*W tensor exists. Half-precision inputs are computed in float32:
bfloat16 maps (mixed precision, ``torch.autocast("cpu")``) are read by the loops as they are and
widened as they copy them, so no float32 copy of the query, key, value or output gradient is
made (backward converts the query once, for the position embedding's gradient, a torch matrix
product); float16 maps are converted first.
Unavailable (and skipped by ``impl="auto"``) when the extension was not built, or was built
from another version of csrc/rse_cpp.cpp than the one beside this file.
"""
import functools
import hashlib
import importlib
import os

import torch

from .rse_common import compute_dtype, enter_backend, input_grads, split_heads, split_pos
from .rse_registry import RSEImpl

__all__ = ["rse_attention_cpp", "cpu_isa", "cpu_thread_pool", "HAS_CPP_EXT", "IMPL"]

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "rse_cpp.cpp")


def _load_extension():
    """(module or None, why not). A binary compiled from another version of the source next to
    this file (a failed or skipped rebuild in a checkout) is refused, never silently used."""
    try:
        _C = importlib.import_module("rsp_d2._C")
    except ImportError as e:  # built without a compiler, or RSP_D2_NO_EXT=1
        return None, f"not built ({e})"
    if os.path.exists(_SOURCE):  # a source checkout; an installed wheel ships no source
        with open(_SOURCE, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()[:16]
        if _C.source_sha != sha:
            return None, (f"stale: {_C.__file__} was compiled from source {_C.source_sha}, "
                          f"but {_SOURCE} is {sha}")
    return _C, ""


_C, CPP_EXT_ERROR = _load_extension()
HAS_CPP_EXT = _C is not None


def _missing() -> str:
    # Reads HAS_CPP_EXT at each call: tests take the extension away by patching it.
    if HAS_CPP_EXT:
        return ""
    return (f"the extension rsp_d2._C is unavailable ({CPP_EXT_ERROR}); reinstall with "
            f"`pip install -e . --no-build-isolation` and a C++ compiler")


def cpu_isa() -> str:
    """The loops ``isa="auto"`` runs on this CPU ("avx512", "avx2" or "baseline"), or "" when
    the extension is unavailable."""
    return _C.best_isa() if HAS_CPP_EXT else ""


def cpu_thread_pool() -> str:
    """Where the loops' threads run: "torch's OpenMP pool" (the extension built against
    torch's own OpenMP runtime, setup.py) or "threads of its own"; "" when unavailable."""
    return _C.thread_pool() if HAS_CPP_EXT else ""


def _without_autocast(fn):
    """Runs fn with CPU autocast off: the kernels' bias products (at::matmul, in C++) would
    otherwise come back in bfloat16 under ``torch.autocast("cpu")``, beside float32 loops."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)
    return wrapper


def _maps_dtype(*maps) -> torch.dtype:
    """The dtype the loops read the maps in: bfloat16 as it is when all of them are (the loops
    widen it to float32 as they copy rows), else the computation dtype."""
    if all(m.dtype == torch.bfloat16 for m in maps):
        return torch.bfloat16
    return compute_dtype(maps[0].dtype)


def _split(maps, pos, num_heads):
    """The kernels' contiguous (N, G, D, H, W) maps in :func:`_maps_dtype` and the (k*k, G, D)
    pos (or None) in the computation dtype."""
    dtype = _maps_dtype(*maps)
    return (*(split_heads(m, num_heads, dtype, contiguous=True) for m in maps),
            split_pos(pos, num_heads, compute_dtype(dtype), contiguous=True))


class _CppRSE(torch.autograd.Function):
    @staticmethod
    @_without_autocast
    def forward(ctx, query, key, value, pos, kernel_size, dilation, num_heads, isa):
        q, k, v, p = _split((query, key, value), pos, num_heads)
        geo = (kernel_size, dilation)
        logits = _C.window_dot(q, k, p, *geo, float("-inf"), None, isa)
        # The centre offset is always on the map, so no pixel's logits are all -inf.
        weights = torch.softmax(logits, dim=2)
        del logits
        out = _C.window_gather(weights, v, None, *geo, isa)
        ctx.save_for_backward(query, key, value, pos, weights)
        ctx.args = (kernel_size, dilation, num_heads, isa)
        return out.reshape(value.shape).to(value.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    @_without_autocast
    def backward(ctx, grad_out):
        query, key, value, pos, weights = ctx.saved_tensors
        kernel_size, dilation, num_heads, isa = ctx.args
        geo = (kernel_size, dilation)
        q, k, v, g, p = _split((query, key, value, grad_out), pos, num_heads)
        # dL/dw_o = g . v_o, then the softmax's backward over the window,
        # dlogit = w * (dw - sum_o w dw), in the same pass (off-map entries have w = 0).
        d_logits = _C.window_dot(g, v, None, *geo, 0.0, weights, isa)
        dq = _C.window_gather(d_logits, k, p, *geo, isa)  # sum_o dlogit_o (k_o + pos_o)
        dk = _C.window_scatter(d_logits, q, *geo, isa)
        dv = _C.window_scatter(weights, g, *geo, isa)
        return (*input_grads(ctx, dq, dk, dv, d_logits, q), None, None, None, None)


def rse_attention_cpp(query, key, value, pos=None, kernel_size=7, dilation=1, num_heads=1,
                      isa: str = "auto"):
    """Same contract as :func:`rsp_d2.layers.rse_attention` (Eq. 1-3, masked borders, no scaling).

    Args:
        query, key: (N, M, H, W) CPU tensors; value: (N, C, H, W); pos: (k*k, M) or None.
        isa: which compiled loops run: "auto" (the widest this CPU has, :func:`cpu_isa`) or
            one of ``rsp_d2._C.available_isas()`` ("avx512", "avx2", "baseline"; the tests
            check each against the reference). One this CPU lacks raises RuntimeError.

    Returns:
        (N, C, H, W) in value's dtype; float16/bfloat16 are computed in float32 (bfloat16 maps
        read without a float32 copy when query, key and value all are). Uses
        torch.get_num_threads() threads. The loops refuse anything but contiguous CPU tensors.
    """
    enter_backend("cpp", _missing())
    return _CppRSE.apply(query, key, value, pos, kernel_size, dilation, num_heads, isa)


# Any floating dtype (half precision is computed in float32), CPU only.
IMPL = RSEImpl("cpp", rse_attention_cpp, devices=("cpu",), requirement=_missing)
