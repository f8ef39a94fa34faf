"""The cross-scale pixel-to-region relation of the RSE (Sec. III-A, Eq. 1-3): the public entry,
which checks the arguments once (rse_checks.py) and runs the implementation ``impl`` names
(the registry, rse_registry.py, filled in the ``"auto"`` order by rse_backends.py).

Pure PyTorch: nothing here imports detectron2.
"""
import functools
import logging
from typing import Optional

import torch

from . import rse_backends  # noqa: F401  (importing it registers the implementations)
from .rse_checks import RSEWindow, check_rse_tensors
from .rse_common import is_exporting
from .rse_registry import RSEImpl, available_rse_impls, get_rse_impl, rse_impls
from .rse_selfcheck import choose_checked_impl

__all__ = ["rse_attention", "run_rse"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def _log_choice_once(device_type: str, dtype: torch.dtype, name: str):
    logger.info(f"rse_attention(impl='auto') uses '{name}' for {dtype} on {device_type}")


@functools.lru_cache(maxsize=None)
def _log_export_once(name: str):
    logger.info(f"rse_attention: exporting, so impl {name!r} is replaced by 'export' "
                "(standard tensor ops)")


def _choose(impl: str, query: torch.Tensor) -> RSEImpl:
    """The record that runs ``impl`` for `query`: while exporting an exportable one, for
    ``"auto"`` the first available one that passes the self-check, else `impl` itself if it
    can run here (ValueError saying why not)."""
    if is_exporting():
        # The custom autograd Functions, C++ loops and Triton kernels cannot be recorded;
        # "export" computes the same relation in ops every exporter knows.
        if impl == "auto" or not get_rse_impl(impl).exportable:
            _log_export_once(impl)
            impl = "export"
        return get_rse_impl(impl)
    if impl == "auto":
        chosen = choose_checked_impl(query, [i for i in rse_impls() if i.is_available(query)])
        _log_choice_once(query.device.type, query.dtype, chosen.name)
        return chosen
    chosen = get_rse_impl(impl)
    why = chosen.why_not(query)
    if why:
        raise ValueError(f"rse_attention: impl {impl!r} cannot run {query.dtype} on "
                         f"{query.device}: {why}; available there: {available_rse_impls(query)}")
    return chosen


def run_rse(query, key, value, pos, window: RSEWindow, num_heads: int = 1,
            impl: str = "auto") -> torch.Tensor:
    """:func:`rse_attention` for a window checked when it was made (a module's): checks the
    tensors, picks the implementation, runs it. Shapes and result as for rse_attention."""
    check_rse_tensors(query, key, value, pos, window, num_heads)
    return _choose(impl, query).fn(query, key, value, pos, window.kernel_size, window.dilation,
                                   num_heads)


def rse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    pos: Optional[torch.Tensor] = None,
    kernel_size: int = 7,
    dilation: int = 1,
    num_heads: int = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Cross-scale pixel-to-region relation (Eq. 1-3 of the paper).

    ``out[n, :, i, j] = sum_o softmax_o(logit_o) * value[n, :, i + dy_o, j + dx_o]`` with
    ``logit_o = sum_m query[n, m, i, j] * (key[n, m, i + dy_o, j + dx_o] + pos[o, m])``,
    over the offsets ``(dy, dx) in {-r..r}^2 * dilation``, ``r = (kernel_size - 1) / 2``, in
    row-major order. Offsets falling outside the map are excluded from the softmax (masked,
    not zero-padded). There is no 1/sqrt(M) scaling. With ``num_heads=h`` the channels of
    query/key/pos and of value are split into h contiguous groups, each with its own softmax.

    Args:
        query: (N, M, H, W), f_q(x) of the low-level map x.
        key: (N, M, H, W), f_k(z) of the high-level map z upsampled to x's size.
        value: (N, C, H, W), f_v(z).
        pos: (kernel_size**2, M) projected relative-position embedding f_p(p), or None.
        impl: "reference" (unfold + einsum; the definition FLOP counting uses), any registered
            name (:func:`rse_impl_names`, declared in rse_backends.py), or "auto" for the first
            of :func:`available_rse_impls` that passes the self-check. While tracing, scripting
            or exporting (:func:`is_exporting`) a non-exportable choice is replaced by "export".

    Returns:
        (N, C, H, W), the extracted relational semantics z-hat.

    Raises:
        ValueError (:class:`~rsp_d2.layers.rse_checks.InvalidArgument` for kernel_size,
        dilation, num_heads): inconsistent arguments, an unknown ``impl``, or one that cannot
        run on these tensors here (the message says why).
    """
    return run_rse(query, key, value, pos, RSEWindow(kernel_size, dilation), num_heads, impl)
