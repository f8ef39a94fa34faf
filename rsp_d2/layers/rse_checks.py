"""The relation's one validation policy: every argument is checked once, where it enters.

- The window (kernel_size, dilation) when an :class:`RSEWindow` is made: by
  :func:`rsp_d2.layers.rse_attention` from its arguments, by the modules
  (``RelationalSemanticsExtractor``, ``ContextFusion``) when they are built. Code holding an
  ``RSEWindow`` does not check it again.
- The tensors (shapes, dtypes, devices, their split into heads) on every call, by
  :func:`check_rse_tensors` at the public entry (``rse_attention``, ``rse_relation_weights``).
- The implementations, the reference's helpers and the self-check receive checked arguments
  and check nothing.

A bad non-tensor argument raises :class:`InvalidArgument`, which names the argument so that a
caller that got it from elsewhere (``RSPHead``: a config key) can say where it came from.

Pure PyTorch: nothing here imports detectron2.
"""
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch

__all__ = ["InvalidArgument", "RSEWindow", "check_rse_tensors", "check_rse_inputs"]


class InvalidArgument(ValueError):
    """``arg=value`` is not what the relation accepts.

    Attributes:
        arg: the parameter's name ("kernel_size").
        value: what it was given.
        expected: what it must be, in words that may name `related` parameters.
        related: the other parameters the rule involves, {name: value}.
    """

    def __init__(self, arg: str, value, expected: str, related: Optional[Dict] = None):
        self.arg, self.value, self.expected = arg, value, expected
        self.related = dict(related or {})
        super().__init__(self.message())

    def message(self, names: Mapping[str, str] = {}) -> str:
        """The message, each parameter called by `names` (e.g. its config key) when given."""
        name = names.get(self.arg, self.arg)
        text = f"{name}={self.value!r} is invalid: expected {self.expected}"
        if not self.related:
            return text
        return text + " (" + ", ".join(f"{names.get(k, k)}={v!r}"
                                       for k, v in self.related.items()) + ")"


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


@dataclass(frozen=True)
class RSEWindow:
    """The dilated k x k region of Eq. 1 around each pixel: the offsets (dy, dx) in
    {-r..r}^2 * dilation, r = (kernel_size - 1) / 2, in row-major order (the rows of pos).
    Checked when made (InvalidArgument): kernel_size a positive odd int (the window has a
    centre), dilation a positive int."""

    kernel_size: int = 7
    dilation: int = 1

    def __post_init__(self):
        if not _positive_int(self.kernel_size) or self.kernel_size % 2 == 0:
            raise InvalidArgument("kernel_size", self.kernel_size, "a positive odd integer")
        if not _positive_int(self.dilation):
            raise InvalidArgument("dilation", self.dilation, "a positive integer")


def check_rse_tensors(query, key, value, pos, window: RSEWindow, num_heads: int) -> None:
    """Raise ValueError unless the tensors of ``rse_attention`` fit together, `window` and
    `num_heads`: query, key (N, M, H, W), value (N, C, H, W), pos (k*k, M) or None, all
    floating point of one dtype on one device, M and C divisible by num_heads."""
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
    c = value.shape[1]
    if not _positive_int(num_heads) or m % num_heads or c % num_heads:
        raise InvalidArgument("num_heads", num_heads, "a positive integer dividing the channels "
                              "M of query/key and C of value", {"M": m, "C": c})
    tensors = [("key", key), ("value", value)]
    if pos is not None:
        kk = window.kernel_size ** 2
        if pos.shape != (kk, m):
            raise ValueError(f"rse_attention: pos must be (kernel_size**2={kk}, M={m}), got "
                             f"{tuple(pos.shape)}")
        tensors.append(("pos", pos))
    for name, t in tensors:
        if t.dtype != query.dtype or t.device != query.device:
            raise ValueError(f"rse_attention: {name} is {t.dtype} on {t.device}, but query is "
                             f"{query.dtype} on {query.device}; all inputs must match")


def check_rse_inputs(query, key, value, pos, kernel_size, dilation, num_heads) -> None:
    """Every argument of ``rse_attention`` at once (the window, then the tensors)."""
    check_rse_tensors(query, key, value, pos, RSEWindow(kernel_size, dilation), num_heads)
