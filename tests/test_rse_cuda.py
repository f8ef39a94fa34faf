"""Every relation implementation that runs on CUDA, against the unfold reference and the loop
definition (test_rse_impls' cases: odd sizes, borders, dilation 1-3, 1-4 heads, pos, k = 1), in
float32, float16 and bfloat16, outputs and gradients; and the self-check of ``impl="auto"``
passing there. Skipped without a GPU: tools/gpu_check.sh runs these on a CUDA machine."""
import logging

import pytest
import torch

import test_rse_impls as t
from rsp_d2.layers import available_rse_impls, get_rse_impl, rse_attention, rse_impl_names
from rsp_d2.layers import rse_selfcheck

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="CUDA tests, and no GPU is visible (tools/gpu_check.sh "
                                       "runs them on a CUDA machine)")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# FlexAttention's fused softmax accumulates differently from the reference (test_rse_impls).
FP32_TOL = {"flex": dict(atol=1e-4, rtol=1e-4)}


def _on_cuda(fn):
    """fn on CUDA copies of CPU inputs, result back on the CPU: gradients reach the CPU leaves."""
    def run(*args):
        *tensors, k, d, g = args
        out = fn(*(x.cuda() if x is not None else None for x in tensors), k, d, g)
        return out.cpu()
    return run


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", t.CASES, ids=t.IDS)
@pytest.mark.parametrize("name", [n for n in rse_impl_names() if n != "reference"])
def test_cuda_impl_matches_reference_and_loops(name, case, dtype):
    impl = get_rse_impl(name)
    if not impl.is_available(torch.empty(1, 1, 1, 1, device="cuda", dtype=dtype)):
        pytest.skip(f"impl {name!r} does not run {dtype} on CUDA here")
    tol = FP32_TOL.get(name, t.FP32_TOL) if dtype == torch.float32 else t.HALF_TOL[dtype]
    t._check_against_definitions(_on_cuda(impl.fn), case, dtype, tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_auto_self_check_passes_on_cuda(dtype, monkeypatch):
    monkeypatch.delenv(rse_selfcheck.SELFCHECK_ENV, raising=False)  # the default: cuda checked
    rse_selfcheck.clear_selfcheck_cache()
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    rse_selfcheck.logger.addHandler(handler)
    try:
        q, k, v = (torch.randn(1, 8, 17, 23, device="cuda", dtype=dtype) for _ in range(3))
        pos = torch.randn(49, 8, device="cuda", dtype=dtype)
        first = available_rse_impls(q)[0]
        out = rse_attention(q, k, v, pos, 7, 1, 2)
    finally:
        rse_selfcheck.logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
    assert rse_selfcheck._CACHE.get(("cuda:0", dtype, first)) is None or \
        rse_selfcheck._CACHE[("cuda:0", dtype, first)].ok
    ref = rse_attention(q.double(), k.double(), v.double(), pos.double(), 7, 1, 2,
                        impl="reference")
    tol = 1e-4 if dtype == torch.float32 else t.HALF_TOL[dtype]["atol"] * 4
    assert (out.double() - ref).abs().max().item() <= tol * max(1.0, ref.abs().max().item())
