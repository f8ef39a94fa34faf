"""The self-check of rse_attention(impl="auto") (rsp_d2/layers/rse_selfcheck.py), on the CPU:
deliberately broken implementations registered ahead of the good ones must be caught, warned
about once and skipped; the switch RSP_D2_RSE_SELFCHECK turns it on per device type or off.
The self-check works on the registry's records: what is trusted is the record's to say."""
import logging

import pytest
import torch

from rsp_d2.layers import (RSEImpl, available_rse_impls, get_rse_impl, register_rse_impl,
                           rse_attention, rse_impl_names, unregister_rse_impl)
from rsp_d2.layers import rse_selfcheck
from rsp_d2.layers.rse_chunked import rse_attention_chunked
from rsp_d2.layers.rse_selfcheck import SELFCHECK_ENV, selfcheck_device_types, selfcheck_impl

BROKEN = "broken_for_test"


def _wrong_output(q, k, v, pos, kernel_size, dilation, num_heads):
    return rse_attention_chunked(q, k, v, pos, kernel_size, dilation, num_heads) * 1.05


def _raises(q, k, v, pos, kernel_size, dilation, num_heads):
    raise RuntimeError("illegal memory access (simulated)")


class _WrongKeyGrad(torch.autograd.Function):
    """Identity on the key whose backward drops half of the key gradient."""

    @staticmethod
    def forward(ctx, key):
        return key.view_as(key)

    @staticmethod
    def backward(ctx, grad):
        return grad * 0.5


def _wrong_gradient(q, k, v, pos, kernel_size, dilation, num_heads):
    return rse_attention_chunked(q, _WrongKeyGrad.apply(k), v, pos, kernel_size, dilation,
                                 num_heads)


@pytest.fixture
def warnings_log():
    """The warnings rse_selfcheck logs (its own handler: independent of propagation)."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    rse_selfcheck.logger.addHandler(handler)
    yield records
    rse_selfcheck.logger.removeHandler(handler)


@pytest.fixture
def broken(monkeypatch):
    """register(fn): `fn` as impl BROKEN, first in the "auto" order on CPU; checks on CPU on."""
    monkeypatch.setenv(SELFCHECK_ENV, "cpu")
    rse_selfcheck.clear_selfcheck_cache()

    def register(fn, trusted=False):
        impl = RSEImpl(BROKEN, fn, devices=("cpu",), trusted=trusted)
        register_rse_impl(impl, before=rse_impl_names()[0])

    yield register
    unregister_rse_impl(BROKEN)
    rse_selfcheck.clear_selfcheck_cache()


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(1, 8, 10, 13, generator=g).to(dtype) for _ in range(2))
    v = torch.randn(1, 12, 10, 13, generator=g).to(dtype)
    pos = torch.randn(49, 8, generator=g).to(dtype)
    return q, k, v, pos


@pytest.mark.parametrize("fn, reason", [
    (_wrong_output, "error"),
    (_raises, "raised RuntimeError: illegal memory access"),
    (_wrong_gradient, "error"),
], ids=["wrong-output", "exception", "wrong-gradient"])
def test_broken_impl_is_caught_once_and_skipped(broken, warnings_log, fn, reason):
    broken(fn)
    q, k, v, pos = _inputs()
    assert available_rse_impls(q)[0] == BROKEN
    good = rse_attention(q, k, v, pos, 7, 1, 2, impl="chunked")

    for _ in range(2):
        out = rse_attention(q, k, v, pos, 7, 1, 2)  # the next implementation: cpp or chunked
        torch.testing.assert_close(out, good, atol=1e-5, rtol=1e-5)
    assert len(warnings_log) == 1  # one warning per (device, dtype, implementation)
    message = warnings_log[0].getMessage()
    assert f"'{BROKEN}' failed its self-check for torch.float32 on cpu" in message
    assert reason in message and SELFCHECK_ENV in message

    # Another dtype is checked on its own.
    rse_attention(*(t.double() for t in (q, k, v, pos)), 7, 1, 2)
    assert len(warnings_log) == 2 and "torch.float64" in warnings_log[1].getMessage()


def test_check_runs_under_no_grad_and_keeps_the_callers_random_stream(broken, warnings_log):
    broken(_wrong_gradient)
    q, k, v, pos = _inputs()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with torch.no_grad():  # inference: the gradient check still runs (enable_grad inside)
        rse_attention(q, k, v, pos, 7, 1, 2)
    assert len(warnings_log) == 1
    torch.testing.assert_close(torch.rand(3), expected_next)


def test_switch_off_and_default_device_types(broken, warnings_log, monkeypatch):
    broken(_wrong_output)
    q, k, v, pos = _inputs()
    good = rse_attention(q, k, v, pos, 7, 1, 2, impl="chunked")
    for off in ("0", "off"):
        monkeypatch.setenv(SELFCHECK_ENV, off)
        assert selfcheck_device_types() == ()
        # unchecked, "auto" runs the broken implementation: this is what the check prevents
        torch.testing.assert_close(rse_attention(q, k, v, pos, 7, 1, 2), good * 1.05)
    monkeypatch.delenv(SELFCHECK_ENV)
    assert selfcheck_device_types() == ("cuda",)  # fused GPU kernels only, by default
    torch.testing.assert_close(rse_attention(q, k, v, pos, 7, 1, 2), good * 1.05)
    monkeypatch.setenv(SELFCHECK_ENV, "cuda, cpu")
    assert selfcheck_device_types() == ("cuda", "cpu")
    torch.testing.assert_close(rse_attention(q, k, v, pos, 7, 1, 2), good, atol=1e-5, rtol=1e-5)
    assert len(warnings_log) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_good_impls_pass(dtype):
    names = [n for n in available_rse_impls(torch.empty(1, 1, 1, 1, dtype=dtype))
             if n != "reference"]
    assert "chunked" in names
    for name in names:
        result = selfcheck_impl(get_rse_impl(name), "cpu", dtype,
                                baseline=get_rse_impl("reference"))
        assert result.ok, (name, result)
        assert result.max_error <= result.tolerance and result.seconds > 0
    # The tolerance is tight enough to catch a 5 % error in every dtype.
    assert rse_selfcheck.SELFCHECK_TOLERANCE[dtype] < 0.05


def test_a_trusted_record_is_not_checked(broken, warnings_log):
    # "trusted" is the record's word: a trusted implementation is taken as it is (which is why
    # only pure-PyTorch ones, chunked and the reference, say so).
    broken(_wrong_output, trusted=True)
    q, k, v, pos = _inputs()
    good = rse_attention(q, k, v, pos, 7, 1, 2, impl="chunked")
    torch.testing.assert_close(rse_attention(q, k, v, pos, 7, 1, 2), good * 1.05)
    assert warnings_log == []
