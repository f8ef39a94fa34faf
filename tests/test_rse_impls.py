"""The fast rse_attention implementations ("cpp", "chunked", "triton", "flex") against the reference
and against the loop definition (tests/support/rse_loops.py), outputs and gradients.

rse_loops builds its logits from Python floats, so only value's gradient flows through it;
the gradients for query, key and pos are checked against the reference's autograd in float64
(itself gradchecked in test_rse_reference.py) and, for "chunked", by gradcheck.
"""
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from support.rse_loops import rse_loops
from rsp_d2.layers import RelationalSemanticsExtractor, rse, rse_attention
from rsp_d2.layers import rse_backends, rse_chunked, rse_cpp, rse_registry
from rsp_d2.layers.rse_chunked import rse_attention_chunked
from rsp_d2.layers.rse_cpp import HAS_CPP_EXT, rse_attention_cpp
from rsp_d2.layers.rse_export import rse_attention_export
from rsp_d2.layers.rse_flex import HAS_FLEX
from rsp_d2.layers.rse_triton import HAS_TRITON

# (n, m, c, h, w, kernel_size, dilation, num_heads, pos): odd sizes, borders everywhere,
# dilation 1-3, 1-4 heads, windows larger than the map, k = 1; the last two span several
# SIMD blocks of pixels, window columns (k = 9) and channel blocks of the C++ loops (8 on AVX2;
# 16, 12 and the rest on AVX-512: 36 = 16 + 16 + 4 value channels, 13 = 12 + 1 query ones),
# with remainders.
CASES = [
    (2, 8, 12, 9, 11, 3, 1, 1, False),
    (1, 8, 12, 7, 13, 3, 2, 2, True),
    (1, 8, 8, 9, 11, 5, 3, 4, True),
    (2, 4, 6, 5, 6, 7, 1, 1, True),
    (1, 6, 9, 11, 8, 7, 2, 3, False),
    (1, 4, 4, 4, 5, 1, 1, 1, True),
    (1, 4, 20, 6, 37, 9, 1, 2, True),
    (1, 13, 36, 5, 19, 3, 1, 1, True),
]
IDS = ["k{5}d{6}h{7}{p}_{3}x{4}".format(*c, p="pos" if c[8] else "") for c in CASES]

FP32_TOL = dict(atol=1e-5, rtol=1e-5)
# Inputs are rounded to the half type first and the expectation computed from the rounded
# inputs in float64, so what remains is float32 accumulation plus rounding of the result to
# the half type (eps 2**-11 for float16, 2**-8 for bfloat16) - a few ulp of it.
HALF_TOL = {torch.float16: dict(atol=2e-3, rtol=2e-3), torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2)}


def _inputs(n, m, c, h, w, k, pos, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, key = (torch.randn(n, m, h, w, generator=g) for _ in range(2))
    v = torch.randn(n, c, h, w, generator=g)
    p = torch.randn(k * k, m, generator=g) if pos else None
    return [t.to(dtype).requires_grad_() if t is not None else None for t in (q, key, v, p)]


def _grads(out, inputs, grad_out):
    leaves = [t for t in inputs if t is not None]
    return torch.autograd.grad(out, leaves, grad_out)


def _expected(inputs, k, d, g, dtype, grad_seed=1):
    """Float64 reference output and (q, k, v[, pos]) gradients for a fixed random grad_out
    (representable in `dtype`)."""
    exact = [t.detach().double().requires_grad_() if t is not None else None for t in inputs]
    out = rse_attention(*exact, kernel_size=k, dilation=d, num_heads=g, impl="reference")
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed))
    grad_out = grad_out.to(dtype).double()
    return exact, out, grad_out, _grads(out, exact, grad_out)


def _check_against_definitions(fn, case, dtype=torch.float32, tol=FP32_TOL):
    n, m, c, h, w, k, d, g, pos = case
    inputs = _inputs(n, m, c, h, w, k, pos, dtype)
    exact, ref_out, grad_out, ref_grads = _expected(inputs, k, d, g, dtype)
    out = fn(*inputs, k, d, g)
    assert out.shape == (n, c, h, w) and out.dtype == dtype
    torch.testing.assert_close(out.double(), ref_out, **tol)
    loops = rse_loops(*exact, kernel_size=k, dilation=d, num_heads=g)
    torch.testing.assert_close(out.double(), loops, **tol)
    grads = _grads(out, inputs, grad_out.to(dtype))
    for name, got, want in zip("qkvp", grads, ref_grads):
        assert got.dtype == dtype, name
        torch.testing.assert_close(got.double(), want, **tol, msg=lambda s: f"grad {name}: {s}")
    (loop_dv,) = torch.autograd.grad(loops, exact[2], grad_out)
    torch.testing.assert_close(grads[2].double(), loop_dv, **tol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("band_rows", [None, 2])
def test_chunked_matches_reference_and_loops(case, band_rows):
    # band_rows=2 splits every map into several bands, whose seams must not show.
    def fn(q, k, v, p, ks, d, g):
        return rse_attention_chunked(q, k, v, p, ks, d, g, band_rows=band_rows)

    _check_against_definitions(fn, case)


@pytest.mark.parametrize("case", [CASES[1], CASES[4]], ids=[IDS[1], IDS[4]])
def test_chunked_parallel_bands(monkeypatch, case):
    # Tiny maps normally run their bands in the calling thread; force the thread pool.
    monkeypatch.setattr(rse_chunked, "_PARALLEL_MIN_ELEMENTS", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        def fn(q, k, v, p, ks, d, g):
            return rse_attention_chunked(q, k, v, p, ks, d, g, band_rows=1)

        _check_against_definitions(fn, case)
        assert torch.get_num_threads() == 3  # the workers' single-threading did not leak
    finally:
        torch.set_num_threads(threads)


# The C++ extension is built by `pip install -e .` (make env); RSP_D2_NO_EXT=1 skips it on
# purpose. Anywhere else a missing extension is a failed build, and test_cpp_extension_built
# says so instead of these tests quietly skipping.
_NO_EXT = os.environ.get("RSP_D2_NO_EXT") == "1"
needs_cpp = pytest.mark.skipif(not HAS_CPP_EXT and _NO_EXT,
                               reason="rsp_d2._C deliberately not built (RSP_D2_NO_EXT=1)")
CPU_IMPLS = {"chunked": rse_attention_chunked, "cpp": rse_attention_cpp,
             "export": rse_attention_export}


def test_cpp_extension_built():
    if _NO_EXT:
        pytest.skip("RSP_D2_NO_EXT=1: the C++ extension is deliberately not built")
    assert HAS_CPP_EXT, f"rsp_d2._C failed to import: {rse_cpp.CPP_EXT_ERROR}"


# Degenerate maps: one row, one column, dilated windows reaching past the whole map (whole
# window rows/columns off the map).
EDGE_CASES = [
    (1, 4, 4, 1, 3, 5, 2, 1, True),
    (1, 4, 6, 3, 1, 3, 4, 2, True),
    (2, 4, 4, 2, 3, 7, 3, 1, False),
]
EDGE_IDS = ["k{5}d{6}h{7}_{3}x{4}".format(*c) for c in EDGE_CASES]


@pytest.mark.parametrize("case", EDGE_CASES, ids=EDGE_IDS)
@pytest.mark.parametrize("impl", ["chunked", pytest.param("cpp", marks=needs_cpp)])
def test_degenerate_maps(impl, case):
    _check_against_definitions(CPU_IMPLS[impl], case)


def _isa_param(isa):
    # Each ISA's loops run only where the CPU has it; "auto" never picks the narrower ones on a
    # wide machine, so each is forced here.
    runs = rse_cpp.HAS_CPP_EXT and isa in rse_cpp._C.available_isas()
    return pytest.param(isa, marks=pytest.mark.skipif(
        not runs, reason=f"this CPU (or build) cannot run the {isa!r} loops"))


@needs_cpp
@pytest.mark.parametrize("isa", [_isa_param(i) for i in ("avx512", "avx2", "baseline")])
@pytest.mark.parametrize("case", CASES + EDGE_CASES, ids=IDS + EDGE_IDS)
def test_cpp_matches_reference_and_loops(case, isa):
    def fn(q, k, v, p, ks, d, g):
        return rse_attention_cpp(q, k, v, p, ks, d, g, isa=isa)

    _check_against_definitions(fn, case)


@needs_cpp
def test_cpp_isa_choice():
    # "auto" runs the widest loops the CPU has; a named ISA the CPU lacks, or a misspelt one,
    # is refused rather than run as something else.
    isas = rse_cpp._C.available_isas()
    assert rse_cpp.cpu_isa() == isas[0] and isas[-1] == "baseline"
    inputs = _inputs(1, 4, 4, 5, 6, 3, True)
    auto = rse_attention_cpp(*inputs, 3, 1, 1)
    assert torch.equal(auto, rse_attention_cpp(*inputs, 3, 1, 1, isa=isas[0]))
    for name in {"avx512", "avx2"} - set(isas):
        with pytest.raises(RuntimeError, match=f"isa='{name}' cannot run here"):
            rse_attention_cpp(*inputs, 3, 1, 1, isa=name)
    with pytest.raises(RuntimeError, match="isa must be"):
        rse_attention_cpp(*inputs, 3, 1, 1, isa="sse9")


@needs_cpp
def test_cpp_threads_split_rows_exactly():
    # Big enough for the kernels to split their rows over 3 threads (the CASES above run on
    # one): every call has N*G*H = 256 rows of at least k*k*(D/G)*W = 49*16*96 multiply-adds,
    # 19M in all, over 4x the 2**22 a thread must have (csrc/rse_cpp.cpp, kMinWorkPerThread).
    # Each output row is computed by one thread with the same arithmetic, so the split must
    # not change a bit of the kernels' results; d_pos comes from a torch einsum, whose BLAS may
    # sum in another order with other thread counts.
    inputs = _inputs(2, 32, 32, 64, 96, 7, True, seed=5)
    grad_out = torch.randn(2, 32, 64, 96)
    threads = torch.get_num_threads()
    results = []
    try:
        for n_threads in (1, 3):
            torch.set_num_threads(n_threads)
            out = rse_attention_cpp(*inputs, 7, 2, 2)
            results.append([out, *_grads(out, inputs, grad_out)])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(results[0][:4], results[1][:4]):
        assert torch.equal(a, b)
    torch.testing.assert_close(results[0][4], results[1][4])
    # ...and the threaded result is the relation's.
    exact = [t.detach().double() for t in inputs]
    ref = rse_attention(*exact, kernel_size=7, dilation=2, num_heads=2, impl="reference")
    torch.testing.assert_close(results[1][0].double(), ref, **FP32_TOL)


@needs_cpp
def test_cpp_runs_on_torchs_own_openmp_pool():
    """Where torch bundles GNU OpenMP (Linux wheels), setup.py links the extension to that very
    runtime: its loops then run on torch's thread pool, and the process holds one OpenMP
    runtime (a second one's threads would fight torch's spinning ones for the cores)."""
    import glob
    bundled = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*"))
    if not (sys.platform.startswith("linux") and len(bundled) == 1
            and "OpenMP" in torch.__config__.parallel_info()):
        pytest.skip("torch bundles no GNU OpenMP runtime here: the loops start threads of their own")
    assert rse_cpp.cpu_thread_pool() == "torch's OpenMP pool"
    code = ("import re, torch\nfrom rsp_d2.layers import rse_cpp\n"
            "print(sorted(set(re.findall(r'\\S*libgomp\\S*', open('/proc/self/maps').read()))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == repr([os.path.realpath(bundled[0])])


@needs_cpp
def test_cpp_refuses_a_stale_binary(monkeypatch, tmp_path):
    # A binary compiled from other source than the checkout's is not used (a failed rebuild
    # must not leave tests checking the old code).
    assert rse_cpp._load_extension()[0] is not None
    other = tmp_path / "rse_cpp.cpp"
    other.write_text("// another version\n")
    monkeypatch.setattr(rse_cpp, "_SOURCE", str(other))
    ext, why = rse_cpp._load_extension()
    assert ext is None and why.startswith("stale:") and str(other) in why


@needs_cpp
def test_cpp_gradcheck():
    inputs = [t.detach().double().requires_grad_() for t in _inputs(1, 4, 4, 5, 6, 3, True)]
    assert torch.autograd.gradcheck(lambda *a: rse_attention_cpp(*a, 3, 2, 2), inputs)


@needs_cpp
def test_cpp_rejects_non_cpu_layouts_clearly():
    from rsp_d2 import _C

    a = torch.randn(1, 1, 2, 4, 5)
    with pytest.raises(RuntimeError, match="contiguous CPU tensor"):
        _C.window_dot(a, a.transpose(3, 4).contiguous().transpose(3, 4), None, 3, 1, 0.0)
    with pytest.raises(RuntimeError, match=r"\(K\*K, G, D\)"):
        _C.window_dot(a, a, torch.zeros(3, 2), 3, 1, 0.0)
    q = torch.randn(1, 4, 5, 6)
    with pytest.raises(ValueError, match="kernel_size=4 is invalid: expected a positive odd"):
        rse_attention(q, q, q, None, 4, impl="cpp")


# impl "export": blocks with a halo at dilation 1 (several blocks, block seams, maps smaller
# than a block, k = 1), shifted slices at dilation > 1; the degenerate maps too.
_MULTI_BLOCK = (1, 8, 8, 19, 17, 7, 1, 2, True)


@pytest.mark.parametrize("case", CASES + EDGE_CASES + [_MULTI_BLOCK],
                         ids=IDS + EDGE_IDS + ["k7d1h2pos_19x17"])
def test_export_matches_reference_and_loops(case):
    _check_against_definitions(rse_attention_export, case)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=[IDS[1], IDS[3]])
@pytest.mark.parametrize("impl", ["chunked", pytest.param("cpp", marks=needs_cpp), "export"])
def test_half_precision(impl, case, dtype):
    _check_against_definitions(CPU_IMPLS[impl], case, dtype, HALF_TOL[dtype])


@pytest.mark.parametrize("impl", ["chunked", pytest.param("cpp", marks=needs_cpp), "export"])
def test_stable_for_large_logits(impl):
    # Logits of +-1e4: a softmax without max-subtraction overflows to inf/nan.
    q, k, v, p = _inputs(1, 4, 4, 6, 7, 3, True, seed=3)
    q, k = q.detach() * 100, k.detach() * 100
    out = CPU_IMPLS[impl](q, k, v, p, 3, 1, 1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), rse_loops(q, k, v, p, 3, 1, 1), **FP32_TOL)


@pytest.mark.parametrize("k,d,g,pos", [(3, 2, 2, True), (5, 1, 1, False)])
def test_chunked_gradcheck(k, d, g, pos):
    inputs = [t.detach().double().requires_grad_() if t is not None else None
              for t in _inputs(1, 4, 4, 4, 5, k, pos)]
    leaves = [t for t in inputs if t is not None]

    def fn(*args):
        q, key, v = args[:3]
        return rse_attention_chunked(q, key, v, args[3] if pos else None, k, d, g, band_rows=2)

    assert torch.autograd.gradcheck(fn, leaves)


def test_extractor_module_same_with_chunked():
    torch.manual_seed(0)
    rse_ref = RelationalSemanticsExtractor(16, kernel_size=5, dilation=2, num_heads=2, impl="reference")
    rse_fast = RelationalSemanticsExtractor(16, kernel_size=5, dilation=2, num_heads=2, impl="chunked")
    rse_fast.load_state_dict(rse_ref.state_dict())
    x, z = torch.randn(2, 16, 9, 10), torch.randn(2, 16, 9, 10)
    out_ref, out_fast = rse_ref(x, z), rse_fast(x, z)
    torch.testing.assert_close(out_fast, out_ref, **FP32_TOL)
    out_ref.square().sum().backward()
    out_fast.square().sum().backward()
    for (name, a), b in zip(rse_ref.named_parameters(), rse_fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-5, msg=lambda s: f"{name}: {s}")


# --- memory: the point of "chunked" -------------------------------------------------------

MEM_CASE = dict(n=1, m=8, c=16, h=12, w=13, k=5, d=1, g=2)


def _mem_inputs():
    c = MEM_CASE
    q, k, v, p = _inputs(c["n"], c["m"], c["c"], c["h"], c["w"], c["k"], True)
    unfolded = c["k"] ** 2 * c["m"] * c["h"] * c["w"]  # k*k*M*H*W, smaller than k*k*C*H*W
    return (q, k, v, p), unfolded


def _saved_numels(impl):
    (q, k, v, p), _ = _mem_inputs()
    numels = []

    def pack(t):
        numels.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = rse_attention(q, k, v, p, MEM_CASE["k"], MEM_CASE["d"], MEM_CASE["g"], impl=impl)
    out.sum().backward()
    return numels


@pytest.mark.parametrize("impl", ["chunked", pytest.param("cpp", marks=needs_cpp)])
def test_saves_no_unfolded_tensor(impl):
    _, unfolded = _mem_inputs()
    saved = _saved_numels(impl)
    assert saved and max(saved) < unfolded, (max(saved), unfolded)
    # The check can fail: the unfold reference saves a k*k*M*H*W tensor or larger.
    assert max(_saved_numels("reference")) >= unfolded


class _LargestTensor(TorchDispatchMode):
    """Records the numel of the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("impl", ["chunked", pytest.param("cpp", marks=needs_cpp), "reference"])
def test_no_unfolded_tensor_created_forward_or_backward(impl):
    (q, k, v, p), unfolded = _mem_inputs()
    with _LargestTensor() as mode:
        out = rse_attention(q, k, v, p, MEM_CASE["k"], MEM_CASE["d"], MEM_CASE["g"], impl=impl)
        out.sum().backward()
    if impl != "reference":
        assert 0 < mode.largest < unfolded, (mode.largest, unfolded)
    else:  # the detector sees the reference's unfold
        assert mode.largest >= unfolded


# --- selection ------------------------------------------------------------------------------

def _auto_calls(monkeypatch, dtype):
    """{impl: [dtype]} of the implementations impl="auto" called for one CPU call."""
    calls = {}
    order = rse_registry.rse_impl_names()
    originals = [rse_registry.get_rse_impl(name) for name in ("cpp", "chunked", "reference")]
    for impl in originals:
        def spy(*args, _fn=impl.fn, _name=impl.name):
            calls.setdefault(_name, []).append(args[0].dtype)
            return _fn(*args)

        rse_registry.register_rse_impl(dataclasses.replace(impl, fn=spy))  # replaced where it stands
    try:
        q, k, v, p = _inputs(1, 4, 4, 5, 6, 3, True, dtype)
        rse_attention(q, k, v, p, 3, impl="auto")
    finally:
        for impl in originals:  # exactly as they were: later tests trace "reference"
            rse_registry.register_rse_impl(impl)
    assert [rse_registry.get_rse_impl(impl.name) for impl in originals] == originals
    assert rse_registry.rse_impl_names() == order
    # triton imports here, but must not be chosen (nor runnable) for CPU tensors.
    assert "triton" in rse_registry.rse_impl_names() and "triton" not in rse_registry.available_rse_impls(q)
    return calls


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_auto_picks_cpp_on_cpu(monkeypatch, dtype):
    assert _auto_calls(monkeypatch, dtype) == {"cpp": [dtype]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_auto_falls_back_to_chunked_without_extension(monkeypatch, caplog, dtype):
    monkeypatch.setattr(rse_cpp, "HAS_CPP_EXT", False)
    rse._log_choice_once.cache_clear()
    with caplog.at_level("INFO", logger="rsp_d2.layers.rse"):
        assert _auto_calls(monkeypatch, dtype) == {"chunked": [dtype]}
    assert f"uses 'chunked' for {dtype} on cpu" in caplog.text  # the choice is visible
    q = _inputs(1, 4, 4, 5, 6, 3, False)[0]
    # Forced, it says why it cannot run (the record's requirement).
    with pytest.raises(ValueError, match="impl 'cpp' cannot run .*: the extension rsp_d2._C is "
                                         "unavailable"):
        rse_attention(q, q, q, None, 3, impl="cpp")
    with pytest.raises(RuntimeError, match="impl 'cpp' cannot run here: the extension"):
        rse_attention_cpp(q, q, q, None, 3)  # called directly
    rse._log_choice_once.cache_clear()


def test_unknown_impl_raises():
    q, k, v, p = _inputs(1, 4, 4, 5, 6, 3, True)
    with pytest.raises(ValueError, match="unknown impl 'fast'"):
        rse_attention(q, k, v, p, 3, impl="fast")


def test_triton_refuses_cpu_tensors_explicitly():
    q, k, v, p = _inputs(1, 4, 4, 5, 6, 3, True)
    with pytest.raises(ValueError, match="impl 'triton' cannot run torch.float32 on cpu: "
                                         "(it runs on cuda tensors only|the `triton` package)"):
        rse_attention(q, k, v, p, 3, impl="triton")


# --- the registry ---------------------------------------------------------------------------

class _Probe:
    """What the records read of a query (device type, dtype), for devices not present here."""

    def __init__(self, device, dtype):
        self.device, self.dtype = torch.device(device), dtype

    def is_floating_point(self):
        return self.dtype.is_floating_point


_FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", _FLOATS, ids=lambda d: str(d)[6:])
def test_auto_order_is_declared_once_and_unchanged(device, dtype):
    # The predicates and priorities each module used to carry, restated: the records must
    # give the same candidates, in the same order, on every device and dtype.
    q = _Probe(device, dtype)
    cuda, cpu = device == "cuda", device == "cpu"
    before = [name for name, ok in (
        ("triton", HAS_TRITON and cuda and dtype != torch.float64), ("flex", HAS_FLEX and cuda),
        ("cpp", HAS_CPP_EXT and cpu), ("chunked", True), ("export", True),
        ("reference", True)) if ok]
    assert rse_registry.available_rse_impls(q) == before
    assert rse_backends.AUTO_ORDER == tuple(rse_registry.rse_impl_names()) == (
        "triton", "flex", "cpp", "chunked", "export", "reference")


def test_every_implementation_is_a_module_record():
    # One way to register: module rse_<name>.py holds the record IMPL, rse_backends lists it;
    # the modules register nothing themselves and check no inputs (rse_attention did; only
    # rse_reference hosts a public entry of its own, rse_relation_weights).
    for impl in rse_registry.rse_impls():
        module = importlib.import_module(f"rsp_d2.layers.rse_{impl.name}")
        assert module.IMPL is impl and "register_rse_impl" not in vars(module)
        checks = {"check_rse_inputs", "check_rse_tensors"} & set(vars(module))
        assert impl.name == "reference" or not checks, impl.name
    assert [i.name for i in rse_registry.rse_impls() if i.trusted] == ["chunked", "reference"]
    assert [i.name for i in rse_registry.rse_impls() if i.exportable] == ["export", "reference"]


def test_unavailable_impl_says_why():
    q = _inputs(1, 4, 4, 5, 6, 3, False)[0]
    flex = rse_registry.get_rse_impl("flex")
    assert flex.why_not(q) == ("it runs on cuda tensors only" if HAS_FLEX else
                               f"torch {torch.__version__} has no torch.nn.attention."
                               "flex_attention (needs >= 2.5)")
    with pytest.raises(ValueError, match=r"impl 'flex' cannot run torch.float32 on cpu: .*; "
                                         r"available there: \['"):
        rse_attention(q, q, q, None, 3, impl="flex")
    assert rse_registry.get_rse_impl("triton").why_not(_Probe("cuda", torch.float64)) in (
        "it runs float16, bfloat16, float32 only", "the `triton` package is not installed")


def test_register_before_replace_and_unregister():
    order = rse_registry.rse_impl_names()
    extra = rse_registry.RSEImpl("throwaway", rse_attention_chunked, devices=("cpu",))
    try:
        assert rse_registry.register_rse_impl(extra, before="chunked") is extra
        assert rse_registry.rse_impl_names() == order[:order.index("chunked")] + ["throwaway"] + \
            order[order.index("chunked"):]
        replaced = dataclasses.replace(extra, exportable=True)
        rse_registry.register_rse_impl(replaced)  # in place
        assert rse_registry.get_rse_impl("throwaway") is replaced
        assert rse_registry.rse_impl_names().index("throwaway") == order.index("chunked")
        with pytest.raises(ValueError, match="unknown impl 'nowhere'"):
            rse_registry.register_rse_impl(extra, before="nowhere")
    finally:
        rse_registry.unregister_rse_impl("throwaway")
    assert rse_registry.rse_impl_names() == order


def test_deprecated_priority_registration_lands_where_its_number_put_it():
    order = rse_registry.rse_impl_names()
    try:
        with pytest.deprecated_call():
            rse_registry.register_rse_impl("legacy", rse_attention_chunked,
                                  lambda q: q.device.type == "cpu", 35)
        assert rse_registry.rse_impl_names().index("legacy") == order.index("chunked")  # 30 < 35 < 40
        assert rse_registry.get_rse_impl("legacy").why_not(_Probe("cuda", torch.float32))
    finally:
        rse_registry.unregister_rse_impl("legacy")


def test_arguments_are_checked_once(monkeypatch):
    """From a module to the kernel: the window when the module is built, the tensors once per
    call at the entry; the reference's helpers and the implementations check nothing."""
    from rsp_d2.layers import rse_checks, rse_reference

    counts = {"window": 0, "tensors": 0, "reference": 0}
    window_init = rse_checks.RSEWindow.__post_init__

    def count(what, fn):
        def counted(*args):
            counts[what] += 1
            return fn(*args)
        return counted

    monkeypatch.setattr(rse_checks.RSEWindow, "__post_init__", count("window", window_init))
    monkeypatch.setattr(rse, "check_rse_tensors", count("tensors", rse.check_rse_tensors))
    monkeypatch.setattr(rse_reference, "check_rse_tensors",
                        count("reference", rse_reference.check_rse_tensors))
    module = RelationalSemanticsExtractor(8, kernel_size=3, impl="reference")
    x = torch.randn(1, 8, 5, 6)
    for _ in range(2):
        module(x, x)
    assert counts == {"window": 1, "tensors": 2, "reference": 0}
    q = _inputs(1, 4, 4, 5, 6, 3, False)[0]
    rse_attention(q, q, q, None, 3, impl="chunked")  # the functional entry makes its window
    assert counts == {"window": 2, "tensors": 3, "reference": 0}
    module.relation_weights(x, x)  # the figures' path: the module's window, tensors once
    assert counts == {"window": 2, "tensors": 3, "reference": 1}


# --- triton, through its interpreter ------------------------------------------------------

_TRITON_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    sys.path.insert(0, {tests!r})
    import test_rse_impls as t
    from rsp_d2.layers.rse_triton import rse_attention_triton
    results = {{}}
    runs = [(torch.float32, t.FP32_TOL, i) for i in range(len(t.CASES))]
    runs += [(torch.float16, t.HALF_TOL[torch.float16], i) for i in (1, 3)]
    for dtype, tol, i in runs:
        t._check_against_definitions(rse_attention_triton, t.CASES[i], dtype, tol)
        results[f"{{dtype}}-{{t.IDS[i]}}"] = "ok"
    print(json.dumps(results))
""")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
def test_triton_kernels_in_interpreter():
    """Forward and backward kernels on CPU tensors under TRITON_INTERPRET=1 (no GPU here).

    float32 and float16 only: triton 2.3.1's interpreter has no bfloat16 or float64
    (its Builder lacks get_bf16_ty / get_double_ty), so those dtypes cannot be interpreted;
    impl="triton" is not offered for float64 at all.
    """
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TRITON_INTERPRET="1")  # read when triton is imported
    proc = subprocess.run([sys.executable, "-c", _TRITON_SCRIPT.format(tests=tests_dir)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == len(CASES) + 2 and set(results.values()) == {"ok"}


# --- flex -------------------------------------------------------------------------------------

_NO_FLEX = (f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs >= 2.5)"
            if not HAS_FLEX else "impl='flex' runs on CUDA only, and no GPU is visible")


@pytest.mark.skipif(not (HAS_FLEX and torch.cuda.is_available()), reason=_NO_FLEX)
@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_flex_matches_reference(case):
    def fn(q, k, v, p, ks, d, g):
        from rsp_d2.layers.rse_flex import rse_attention_flex

        return rse_attention_flex(*(t.cuda() if t is not None else None for t in (q, k, v, p)),
                                  ks, d, g).cpu()

    _check_against_definitions(fn, case, tol=dict(atol=1e-4, rtol=1e-4))


class _Conversions(TorchDispatchMode):
    """Records (input dtype, output dtype, numel) of every dtype conversion an op makes."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            if src.dtype != out.dtype:
                self.seen.append((src.dtype, out.dtype, out.numel()))
        return out


@needs_cpp
@pytest.mark.parametrize("isa", [_isa_param(i) for i in ("avx512", "avx2", "baseline")])
def test_cpp_reads_bfloat16_maps_without_float_copies(isa):
    """bfloat16 maps are widened by the loops as they copy rows: the same bits as computing on
    float32 copies of them, forward and backward, on every ISA, and the only map converted is
    the query, once, for the position embedding's gradient (a matrix product by torch)."""
    n, m, c, h, w, ks = 1, 13, 36, 9, 37, 7  # several register blocks of pixels and channels
    inputs = [t.detach().to(torch.bfloat16).requires_grad_()
              for t in _inputs(n, m, c, h, w, ks, True, seed=5)]
    widened = [t.detach().float().requires_grad_() for t in inputs]
    grad_out = torch.randn(n, c, h, w).to(torch.bfloat16)
    with _Conversions() as conversions:
        out = rse_attention_cpp(*inputs, ks, 1, 1, isa=isa)
        grads = _grads(out, inputs, grad_out)
    expected = rse_attention_cpp(*widened, ks, 1, 1, isa=isa)
    expected_grads = _grads(expected, widened, grad_out.float())
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected.to(torch.bfloat16))
    for got, want in zip(grads, expected_grads):
        assert torch.equal(got, want.to(torch.bfloat16))
    widened_maps = [x for x in conversions.seen
                    if x[:2] == (torch.bfloat16, torch.float32) and x[2] >= m * h * w]
    assert widened_maps == [(torch.bfloat16, torch.float32, m * h * w)], widened_maps


@needs_cpp
def test_cpp_map_dtypes_are_what_the_loops_read():
    """What collect_env reports (``_C.map_dtypes``) is what the loops take; others are refused
    with the dtypes named."""
    q = torch.randn(1, 1, 4, 5, 6)
    for name in rse_cpp._C.map_dtypes():
        a = q.to(getattr(torch, name))
        out = rse_cpp._C.window_dot(a, a, None, 3, 1, float("-inf"))
        assert out.dtype == (torch.float32 if name == "bfloat16" else a.dtype)
    with pytest.raises(RuntimeError, match="must be float32, float64 or bfloat16, got Half"):
        rse_cpp._C.window_dot(q.half(), q.half(), None, 3, 1, float("-inf"))


@needs_cpp
def test_cpp_under_cpu_autocast():
    # Under torch.autocast("cpu") (Detectron2's AMP on the CPU) the loops' C++ matrix products
    # must not switch to bfloat16: same result as without autocast, forward and backward.
    inputs = [t.requires_grad_() for t in _inputs(1, 8, 8, 6, 9, 3, True)]
    grad_out = torch.randn(1, 8, 6, 9)
    plain = rse_attention_cpp(*inputs, 3, 1, 2)
    expected = [plain, *_grads(plain, inputs, grad_out)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rse_attention_cpp(*inputs, 3, 1, 2)
    for a, b in zip([out, *_grads(out, inputs, grad_out)], expected):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, **FP32_TOL)
