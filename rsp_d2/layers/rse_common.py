"""What the implementations of the RSE relation share: the export policy (which
``rse_attention`` applies for every implementation, and each non-exportable one repeats for
calls that bypass it), and the plumbing of the custom-autograd ones (``chunked``, ``cpp``): the
computation dtype, the split into heads, and the end of the backward pass.

The custom-autograd implementations save only the inputs and the (N, G, k*k, H, W) softmax
weights in forward and return d_logits (the gradient of the pre-softmax logits) from their
backward kernels; the gradient of the position embedding is the same contraction for both
(Eq. 3: logit_o = q . (k_o + pos_o)).
"""
from typing import Optional, Tuple

import torch

__all__ = ["is_exporting", "is_traced_for_analysis", "refuse_export", "enter_backend",
           "compute_dtype", "split_heads", "split_pos", "split_inputs", "input_grads"]


def is_exporting() -> bool:
    """True while TorchScript traces or scripts, ``torch.onnx.export`` runs (either exporter)
    or ``torch.export`` captures a graph: then only exportable implementations may run."""
    compiler_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or bool(compiler_exporting is not None and compiler_exporting()))


def is_traced_for_analysis() -> bool:
    """True while the JIT tracer records a graph to be measured, not deployed: traced outside
    ``torch.jit.trace`` of a module and outside ``torch.onnx.export``, as fvcore's
    ``FlopCountAnalysis`` / ``ActivationCountAnalysis`` trace (and through them Detectron2's
    ``tools/analyze_model.py``). Both deploying tracers fill ``torch.jit._trace._trace_module_map``
    (module scope names), the analysis tracer does not; without that attribute every trace
    counts as analysis, which costs speed, never correctness. So does ``torch.jit.trace`` of a
    plain function (not a module), which also leaves the map unset. The map is one per
    process: a module traced for deployment in another thread at the same moment would make
    this trace look like a deployment one (the halo form: right results, other FLOP count)."""
    return (torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and getattr(torch.jit._trace, "_trace_module_map", None) is None)


def refuse_export(name: str) -> None:
    """Raise RuntimeError while tracing/scripting/exporting: implementation `name` (a custom
    autograd Function over C++ loops, Python threads or Triton kernels) would be recorded as
    an opaque call or as the constants of one run, a graph that is wrong for other inputs."""
    if is_exporting():
        raise RuntimeError(
            f"rse_attention impl {name!r} cannot be traced or exported; call "
            f"rsp_d2.layers.rse_attention (it switches to impl='export' while exporting) or "
            f"rse_attention_export directly")


def enter_backend(name: str, missing: str = "") -> None:
    """The first line of each non-exportable implementation's public function, so that a
    direct call (a test, a benchmark) fails as clearly as ``rse_attention`` would: no trace or
    export, and nothing `missing` (its record's ``requirement()``). Inputs are not checked:
    that is ``rse_attention``'s job (rsp_d2/layers/rse_checks.py)."""
    refuse_export(name)
    if missing:
        raise RuntimeError(f"rse_attention impl {name!r} cannot run here: {missing}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sums of k*k products/exps lose too much in half precision: accumulate in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def split_heads(x: torch.Tensor, num_heads: int, dtype: torch.dtype,
                contiguous: bool = False) -> torch.Tensor:
    """(N, G*D, H, W) -> (N, G, D, H, W) in `dtype` (a view when no cast is needed)."""
    n, c, h, w = x.shape
    out = x.to(dtype).reshape(n, num_heads, c // num_heads, h, w)
    return out.contiguous() if contiguous else out


def split_pos(pos: Optional[torch.Tensor], num_heads: int, dtype: torch.dtype,
              contiguous: bool = False) -> Optional[torch.Tensor]:
    """(k*k, M) -> (k*k, G, M/G) in `dtype`, or None."""
    if pos is None:
        return None
    kk, m = pos.shape
    out = pos.to(dtype).reshape(kk, num_heads, m // num_heads)
    return out.contiguous() if contiguous else out


def split_inputs(tensors, pos, num_heads: int, dtype: torch.dtype, contiguous: bool = False):
    """``[split_heads(t) for t in tensors] + [split_pos(pos)]``."""
    return [split_heads(t, num_heads, dtype, contiguous) for t in tensors] + [
        split_pos(pos, num_heads, dtype, contiguous)]


def input_grads(ctx, dq, dk, dv, d_logits, q) -> Tuple:
    """The gradients for (query, key, value, pos) of an RSE autograd Function whose
    ``ctx.saved_tensors`` begin with (query, key, value, pos).

    Args:
        dq, dk, dv: head-split gradients (N, G, D, H, W) in the computation dtype.
        d_logits: (N, G, k*k, H, W) gradient of the logits; q: the head-split query (in
            d_logits' dtype or one it is converted from).
    """
    query, key, value, pos = ctx.saved_tensors[:4]
    d_pos = None
    if pos is not None and ctx.needs_input_grad[3]:  # dL/dpos_o = sum over pixels dlogit_o q
        d_pos = torch.einsum("ngohw,ngmhw->ogm", d_logits, q.to(d_logits.dtype))
        d_pos = d_pos.reshape(pos.shape).to(pos.dtype)
    grads = [g.reshape(t.shape).to(t.dtype) for g, t in ((dq, query), (dk, key), (dv, value))]
    return (*grads, d_pos)
