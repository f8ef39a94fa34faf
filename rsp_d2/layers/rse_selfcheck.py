"""A self-check of the implementation ``rse_attention(impl="auto")`` picks, so that a fused
kernel that is wrong on some GPU, driver or compiler cannot silently train a wrong model.

The fused kernels (Triton, FlexAttention) are tested on CPU (Triton's interpreter) but may not
have run on the device at hand. So before ``"auto"`` first uses a fused implementation for a
(device, dtype), it runs it once on a small random problem, forward and backward, and compares
the output and the gradients of query, key, value and pos with the first *trusted*
implementation of the ``"auto"`` order (pure PyTorch: ``chunked``) run in float32. On an
exception or an error above the dtype's tolerance it logs one warning with the reason and
``"auto"`` takes the next available implementation instead. The verdict is cached per
(device, dtype, implementation): the check costs one small call per process.

Switch: the environment variable ``RSP_D2_RSE_SELFCHECK`` lists the device types checked,
comma-separated; unset means ``cuda``, and ``0`` (or ``off``, ``none``, empty) disables the
check. ``RSP_D2_RSE_SELFCHECK=cpu,cuda`` also checks on the CPU (what the tests use).

It works on the registry's records (:class:`rsp_d2.layers.rse_registry.RSEImpl`), handed in by
``rse_attention``: it looks nothing up by name. Pure PyTorch: nothing here imports detectron2.
"""
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch

from .rse_registry import RSEImpl

__all__ = [
    "SelfCheckResult",
    "SELFCHECK_ENV",
    "SELFCHECK_TOLERANCE",
    "choose_checked_impl",
    "clear_selfcheck_cache",
    "selfcheck_device_types",
    "selfcheck_impl",
]

logger = logging.getLogger(__name__)

SELFCHECK_ENV = "RSP_D2_RSE_SELFCHECK"
# Largest allowed error, relative to max(1, max |expected|), of output and gradients. Half
# precision rounds inputs, weights and output: its bound follows tests/test_rse_impls.py.
SELFCHECK_TOLERANCE: Dict[torch.dtype, float] = {
    torch.float64: 1e-6,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 2e-2,
}
# The problem checked (N, M, C, H, W, k, dilation, heads): odd sizes, dilation, two heads and
# pos, so border masking, head splitting and the pos gradient are all exercised.
_PROBLEM = dict(n=2, m=8, c=6, h=9, w=11, kernel_size=5, dilation=2, num_heads=2)


@dataclass(frozen=True)
class SelfCheckResult:
    """Verdict of :func:`selfcheck_impl`.

    Attributes:
        ok: True when output and gradients are within ``tolerance``.
        max_error: largest relative error over output and gradients (NaN on an exception).
        tolerance: the bound it was held to.
        seconds: wall time of the implementation's forward + backward (after the first call).
        reason: why it failed ("" when ok).
    """

    ok: bool
    max_error: float
    tolerance: float
    seconds: float
    reason: str = ""


_CACHE: Dict[Tuple[str, torch.dtype, str], SelfCheckResult] = {}


def selfcheck_device_types() -> Tuple[str, ...]:
    """Device types whose ``"auto"`` choice is checked, from ``RSP_D2_RSE_SELFCHECK``."""
    value = os.environ.get(SELFCHECK_ENV)
    if value is None:
        return ("cuda",)
    value = value.strip().lower()
    if value in ("", "0", "off", "none", "false", "no"):
        return ()
    return tuple(t.strip() for t in value.split(",") if t.strip())


def clear_selfcheck_cache() -> None:
    """Forget every verdict (tests; a process that re-registered an implementation)."""
    _CACHE.clear()


def _problem(device: torch.device, dtype: torch.dtype):
    """Random (query, key, value, pos, grad_out), from a private generator so the caller's
    random stream (a seeded training run) is left as it was."""
    p = _PROBLEM
    g = torch.Generator().manual_seed(0)
    kk = p["kernel_size"] ** 2

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    # Logits of order 1: a soft softmax, so every window position contributes to the gradients.
    q = rand(p["n"], p["m"], p["h"], p["w"], scale=0.5)
    k = rand(p["n"], p["m"], p["h"], p["w"], scale=0.5)
    v = rand(p["n"], p["c"], p["h"], p["w"])
    pos = rand(kk, p["m"], scale=0.5)
    grad_out = rand(p["n"], p["c"], p["h"], p["w"])
    return q, k, v, pos, grad_out


def _forward_backward(fn, inputs, grad_out) -> List[torch.Tensor]:
    """[out, dq, dk, dv, dpos] of fn on fresh leaves made from `inputs`."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    p = _PROBLEM
    out = fn(*leaves, p["kernel_size"], p["dilation"], p["num_heads"])
    grads = torch.autograd.grad(out, leaves, grad_out)
    return [out.detach()] + [gr.detach() for gr in grads]


def _max_relative_error(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    worst = 0.0
    for a, b in zip(got, want):
        if a.shape != b.shape:
            raise ValueError(f"shape {tuple(a.shape)}, expected {tuple(b.shape)}")
        b = b.double()
        err = ((a.double() - b).abs().max() / b.abs().max().clamp(min=1.0)).item()
        worst = max(worst, err if err == err else float("inf"))  # NaN -> inf
    return worst


def selfcheck_impl(impl: RSEImpl, device, dtype: torch.dtype,
                   baseline: RSEImpl) -> SelfCheckResult:
    """Run `impl` on a small random problem on (device, dtype), forward and backward, against
    `baseline` in float32 on the same device. Never raises for a failing implementation: the
    exception becomes the result's reason. Not cached (see :func:`choose_checked_impl`)."""
    device = torch.device(device)
    tol = SELFCHECK_TOLERANCE.get(dtype, 1e-2)
    fn, baseline_fn = impl.fn, baseline.fn
    # The check must not inherit the caller's mode: inference runs under no_grad, mixed
    # precision under autocast (it would change the dtype under test).
    no_autocast = (torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda")
                   else contextlib.nullcontext())
    with torch.enable_grad(), no_autocast:
        *inputs, grad_out = _problem(device, dtype)
        want = _forward_backward(baseline_fn, [t.float() for t in inputs], grad_out.float())
        try:
            got = _forward_backward(fn, inputs, grad_out)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            _forward_backward(fn, inputs, grad_out)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            err = _max_relative_error(got, want)
        except Exception as e:  # noqa: BLE001 - any failure of the candidate is the verdict
            return SelfCheckResult(False, float("nan"), tol, float("nan"),
                                   f"raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if not err <= tol:
        return SelfCheckResult(False, err, tol, seconds,
                               f"output/gradient error {err:.3g} > tolerance {tol:g}")
    return SelfCheckResult(True, err, tol, seconds)


def choose_checked_impl(query: torch.Tensor, candidates: Sequence[RSEImpl]) -> RSEImpl:
    """The first of `candidates` (the implementations available for `query`, in ``"auto"``
    order) that passes the self-check on query's device and dtype, against the first trusted
    candidate; trusted implementations and unchecked device types pass without running. Each
    failure logs one warning, once per process."""
    baseline = next((c for c in candidates if c.trusted), None)
    if (baseline is None or query.device.type not in selfcheck_device_types()
            or _is_compiling()):
        return candidates[0]
    for impl in candidates:
        if impl.trusted:
            return impl
        name = impl.name
        key = (str(query.device), query.dtype, name)
        result = _CACHE.get(key)
        if result is None:
            result = _CACHE[key] = selfcheck_impl(impl, query.device, query.dtype, baseline)
            if not result.ok:
                logger.warning(
                    f"rse_attention(impl='auto'): '{name}' failed its self-check for "
                    f"{query.dtype} on {query.device} ({result.reason}); falling back to the "
                    f"next implementation. Set {SELFCHECK_ENV}=0 to skip the check.")
        if result.ok:
            return impl
    return candidates[-1]


def _is_compiling() -> bool:
    """Inside torch.compile's tracing the check cannot run eagerly: trust the choice there."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling")
                and compiler.is_compiling())
