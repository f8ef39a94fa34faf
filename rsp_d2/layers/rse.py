"""The cross-scale pixel-to-region relation operation of the RSE (Sec. III-A, Eq. 1-3).

Pure PyTorch: nothing here imports detectron2.
"""
import functools
import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from .rse_selfcheck import choose_checked_impl

__all__ = [
    "RSEImpl",
    "rse_attention",
    "rse_relation_weights",
    "relative_position_map",
    "check_rse_inputs",
    "register_rse_impl",
    "unregister_rse_impl",
    "get_rse_impl",
    "rse_impl_names",
    "available_rse_impls",
    "is_exporting",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RSEImpl:
    """One implementation of :func:`rse_attention`.

    Attributes:
        name: what ``impl=`` selects it by.
        fn: ``fn(query, key, value, pos, kernel_size, dilation, num_heads) -> (N, C, H, W)``.
        is_available: ``is_available(query) -> bool``, whether it runs on that tensor's device
            and dtype here.
        priority: ``impl="auto"`` takes the available implementation of lowest priority.
        exportable: made of standard tensor ops that ONNX / TorchScript / ``torch.export``
            can record; while exporting, :func:`rse_attention` replaces any other choice by
            ``"export"``.
    """

    name: str
    fn: Callable
    is_available: Callable[[torch.Tensor], bool]
    priority: int
    exportable: bool = False


# The one registry: implementations register themselves in their own modules.
_REGISTRY: Dict[str, RSEImpl] = {}


def register_rse_impl(name: str, fn: Callable, is_available: Callable[[torch.Tensor], bool],
                      priority: int, exportable: bool = False) -> RSEImpl:
    """Make `fn` selectable as ``impl=name``; `priority` places it in the ``"auto"`` order
    (lower first). Re-registering a name replaces it."""
    impl = RSEImpl(name, fn, is_available, priority, exportable)
    _REGISTRY[name] = impl
    return impl


def unregister_rse_impl(name: str) -> None:
    """Remove ``impl=name`` (KeyError if it is not registered)."""
    del _REGISTRY[name]


def rse_impl_names() -> List[str]:
    """Every registered implementation, in ``impl="auto"`` order."""
    return [i.name for i in sorted(_REGISTRY.values(), key=lambda i: i.priority)]


def get_rse_impl(name: str) -> RSEImpl:
    """The registered implementation `name`; ValueError naming the choices otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"rse_attention: unknown impl {name!r}; registered: "
                         f"{['auto'] + rse_impl_names()}")
    return _REGISTRY[name]


def available_rse_impls(query: torch.Tensor) -> List[str]:
    """The implementations that can run on `query`'s device and dtype, in ``impl="auto"``
    order: the first one is what ``"auto"`` picks."""
    return [n for n in rse_impl_names() if _REGISTRY[n].is_available(query)]


def is_exporting() -> bool:
    """True while TorchScript traces or scripts, ``torch.onnx.export`` runs (either exporter)
    or ``torch.export`` captures a graph: then only exportable implementations may run."""
    compiler_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or bool(compiler_exporting is not None and compiler_exporting()))


def relative_position_map(kernel_size: int, channels: int, device=None, dtype=None) -> torch.Tensor:
    """The normalized 2D relative position map p of Sec. III-A.

    Returns:
        (kernel_size**2, channels): row o is the offset (dy, dx) of window position o in
        row-major order, normalized to [-1, 1]; the first channels/2 channels hold the row
        offset, the second half the column offset. Dilation does not enter: p encodes the
        position inside the window, not the distance in pixels.
    """
    if channels % 2:
        raise ValueError(f"relative_position_map: channels must be even, got {channels}")
    r = (kernel_size - 1) // 2
    steps = torch.arange(-r, r + 1, device=device, dtype=torch.float32) / max(r, 1)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    half = channels // 2
    p = torch.cat([dy.reshape(-1, 1).expand(-1, half), dx.reshape(-1, 1).expand(-1, half)], dim=1)
    return p.to(dtype) if dtype is not None else p


def check_rse_inputs(query, key, value, pos, kernel_size, dilation, num_heads):
    """Raise ValueError unless the arguments of `rse_attention` are consistent."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"rse_attention: {name} must be a 4-D tensor (N, *, H, W), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t)}")
        if not t.is_floating_point():
            raise ValueError(f"rse_attention: {name} must be floating point, got {t.dtype}")
    if query.shape != key.shape:
        raise ValueError(f"rse_attention: query {tuple(query.shape)} and key {tuple(key.shape)} "
                         "must have the same shape (N, M, H, W)")
    n, m, h, w = query.shape
    if value.shape[0] != n or value.shape[2:] != query.shape[2:]:
        raise ValueError(f"rse_attention: value {tuple(value.shape)} must be (N={n}, C, H={h}, "
                         f"W={w}) like query {tuple(query.shape)}")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"rse_attention: kernel_size must be a positive odd int, got {kernel_size!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"rse_attention: dilation must be a positive int, got {dilation!r}")
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"rse_attention: num_heads must be a positive int, got {num_heads!r}")
    c = value.shape[1]
    if m % num_heads or c % num_heads:
        raise ValueError(f"rse_attention: query/key channels M={m} and value channels C={c} "
                         f"must both be divisible by num_heads={num_heads}")
    tensors = [("key", key), ("value", value)]
    if pos is not None:
        if pos.shape != (kernel_size * kernel_size, m):
            raise ValueError(f"rse_attention: pos must be (kernel_size**2={kernel_size ** 2}, "
                             f"M={m}), got {tuple(pos.shape)}")
        tensors.append(("pos", pos))
    for name, t in tensors:
        if t.dtype != query.dtype or t.device != query.device:
            raise ValueError(f"rse_attention: {name} is {t.dtype} on {t.device}, but query is "
                             f"{query.dtype} on {query.device}; all inputs must match")


def _unfold(x: torch.Tensor, kernel_size: int, dilation: int, groups: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, groups, C/groups, k*k, H, W), zero outside the map."""
    n, c, h, w = x.shape
    pad = dilation * (kernel_size // 2)
    cols = F.unfold(x, kernel_size, dilation=dilation, padding=pad)
    return cols.view(n, groups, c // groups, kernel_size * kernel_size, h, w)


def _border_mask(h, w, kernel_size, dilation, device) -> torch.Tensor:
    """(1, 1, k*k, H, W) bool: True where the window position lies inside the map."""
    ones = torch.ones(1, 1, h, w, device=device)
    return _unfold(ones, kernel_size, dilation, 1)[:, :, 0] > 0


def rse_relation_weights(query, key, pos=None, kernel_size=7, dilation=1, num_heads=1):
    """Softmax relation weights w of Eq. 2-3, computed by unfolding (the readable definition).

    Args:
        query, key: (N, M, H, W).
        pos: (k*k, M) or None, added to the key before the dot product (Eq. 3).

    Returns:
        (N, num_heads, k*k, H, W) weights, summing to 1 over the k*k window positions that lie
        inside the map; positions outside it get weight 0.
    """
    check_rse_inputs(query, key, query, pos, kernel_size, dilation, num_heads)
    n, m, h, w = query.shape
    kk = kernel_size * kernel_size
    keys = _unfold(key, kernel_size, dilation, num_heads)
    if pos is not None:
        keys = keys + pos.t().reshape(1, num_heads, m // num_heads, kk, 1, 1)
    q = query.view(n, num_heads, m // num_heads, h, w)
    logits = torch.einsum("bgmij,bgmkij->bgkij", q, keys)
    logits = logits.masked_fill(~_border_mask(h, w, kernel_size, dilation, query.device),
                                float("-inf"))
    # Softmax at least in float32: half-precision exp over 49 logits loses the small weights.
    acc = torch.promote_types(query.dtype, torch.float32)
    return logits.softmax(dim=2, dtype=acc).to(query.dtype)


def _rse_reference(query, key, value, pos, kernel_size, dilation, num_heads):
    n, c, h, w = value.shape
    weights = rse_relation_weights(query, key, pos, kernel_size, dilation, num_heads)
    values = _unfold(value, kernel_size, dilation, num_heads)
    out = torch.einsum("bgkij,bgckij->bgcij", weights, values)
    return out.reshape(n, c, h, w)


# Last in the "auto" order: the faster implementations register with lower priorities.
register_rse_impl("reference", _rse_reference, lambda q: True, priority=100, exportable=True)


@functools.lru_cache(maxsize=None)
def _log_choice_once(device_type: str, dtype: torch.dtype, name: str):
    logger.info(f"rse_attention(impl='auto') uses '{name}' for {dtype} on {device_type}")


@functools.lru_cache(maxsize=None)
def _log_export_once(name: str):
    logger.info(f"rse_attention: exporting, so impl {name!r} is replaced by 'export' "
                "(standard tensor ops)")


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
        impl: "reference" (unfold + einsum; the definition FLOP counting uses), any name
            registered with :func:`register_rse_impl` (:func:`rse_impl_names`), or "auto" for
            the first of :func:`available_rse_impls`. While tracing, scripting or exporting
            (:func:`is_exporting`) a non-exportable choice is replaced by "export".

    Returns:
        (N, C, H, W), the extracted relational semantics z-hat.
    """
    check_rse_inputs(query, key, value, pos, kernel_size, dilation, num_heads)
    if is_exporting():
        # The custom autograd Functions, C++ loops and Triton kernels cannot be recorded;
        # "export" computes the same relation in ops every exporter knows.
        if impl == "auto" or not get_rse_impl(impl).exportable:
            _log_export_once(impl)
            impl = "export"
    elif impl == "auto":
        # The first available one; on CUDA once checked against 'chunked' (rse_selfcheck).
        impl = choose_checked_impl(query, available_rse_impls(query))
        _log_choice_once(query.device.type, query.dtype, impl)
    elif not get_rse_impl(impl).is_available(query):
        raise ValueError(f"rse_attention: impl {impl!r} cannot run {query.dtype} on "
                         f"{query.device}; available there: {available_rse_impls(query)}")
    return _REGISTRY[impl].fn(query, key, value, pos, kernel_size, dilation, num_heads)
