"""The implementations of the relation, registered in the ``impl="auto"`` order: the only
place that order is written. ``"auto"`` takes the first one that can run on the query's device
and dtype (:meth:`RSEImpl.why_not`) and, where the self-check is on, passes it.

Each implementation is one module ``rse_<name>.py`` whose record ``IMPL`` (an
:class:`~rsp_d2.layers.rse_registry.RSEImpl`) says what it needs; adding one is that module, its
line below and a test (CONTRIBUTING.md). ``python -m rsp_d2.collect_env`` shows the order and
why each implementation does or does not run here.

Pure PyTorch: nothing here imports detectron2.
"""
from . import rse_chunked, rse_cpp, rse_export, rse_flex, rse_reference, rse_triton
from .rse_registry import register_rse_impl

__all__ = ["AUTO_ORDER"]

# Fused kernels first (on their devices), the pure-PyTorch implementations after them.
AUTO_ORDER = tuple(register_rse_impl(impl).name for impl in (
    rse_triton.IMPL,     # fused CUDA kernels
    rse_flex.IMPL,       # FlexAttention, CUDA (torch >= 2.5)
    rse_cpp.IMPL,        # fused C++ loops: preferred on the CPU when built (docs/benchmarks.md)
    rse_chunked.IMPL,    # any device, no k*k unfolding: the fallback, the self-check's yardstick
    rse_export.IMPL,     # standard ops for exporters; slower than the fused ones otherwise
    rse_reference.IMPL,  # the unfold definition: k*k times the memory, last
))
