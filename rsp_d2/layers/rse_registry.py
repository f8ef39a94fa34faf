"""The registry of the relation's implementations: one record per implementation, kept in the
``impl="auto"`` order (:mod:`rsp_d2.layers.rse_backends` declares that order, once).

A record says everything :func:`rsp_d2.layers.rse_attention` needs to know about an
implementation: its function, where it runs and, when it cannot, why (like NATTEN's
``can_run_*(..., raise_error=True)``), whether the ``"auto"`` self-check trusts it and whether
exporters can record it. Nothing here imports the implementations or the self-check.

Pure PyTorch: nothing here imports detectron2.
"""
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

__all__ = [
    "RSEImpl",
    "register_rse_impl",
    "unregister_rse_impl",
    "get_rse_impl",
    "rse_impls",
    "rse_impl_names",
    "available_rse_impls",
]


def _nothing_missing() -> str:
    return ""


@dataclass(frozen=True)
class RSEImpl:
    """One implementation of :func:`rsp_d2.layers.rse_attention`.

    Attributes:
        name: what ``impl=`` selects it by.
        fn: ``fn(query, key, value, pos, kernel_size, dilation, num_heads) -> (N, C, H, W)``,
            called with arguments :func:`rse_attention` has already checked.
        devices: the device types it runs on (``("cuda",)``); None: any.
        dtypes: the floating dtypes it runs; None: any floating dtype.
        requirement: ``requirement() -> str``, what this process lacks to run it at all (a
            package, the C++ extension, a torch version), "" when nothing. A function, read at
            every call, so that a test can take the requirement away.
        trusted: pure PyTorch that the ``"auto"`` self-check compares the others with, never
            checks itself (rsp_d2/layers/rse_selfcheck.py).
        exportable: made of standard tensor ops that ONNX / TorchScript / ``torch.export`` can
            record; while exporting, :func:`rse_attention` replaces any other choice by
            ``"export"``.
    """

    name: str
    fn: Callable
    devices: Optional[Tuple[str, ...]] = None
    dtypes: Optional[Tuple[torch.dtype, ...]] = None
    requirement: Callable[[], str] = _nothing_missing
    trusted: bool = False
    exportable: bool = False

    def why_not(self, query: torch.Tensor) -> str:
        """Why it cannot run on `query`'s device and dtype here; "" when it can."""
        missing = self.requirement()
        if missing:
            return missing
        if self.devices is not None and query.device.type not in self.devices:
            return f"it runs on {' or '.join(self.devices)} tensors only"
        if not query.is_floating_point():
            return "it runs floating-point tensors only"
        if self.dtypes is not None and query.dtype not in self.dtypes:
            return f"it runs {', '.join(str(d).replace('torch.', '') for d in self.dtypes)} only"
        return ""

    def is_available(self, query: torch.Tensor) -> bool:
        """Whether it runs on `query`'s device and dtype here (:meth:`why_not` says why not)."""
        return not self.why_not(query)


# Insertion order is the "auto" order.
_REGISTRY: Dict[str, RSEImpl] = {}


def register_rse_impl(impl, *legacy_args, before: Optional[str] = None, **legacy_kwargs) -> RSEImpl:
    """Make ``impl=impl.name`` selectable. A new name goes last in the ``"auto"`` order, or
    just before the registered implementation `before`; re-registering a name replaces that
    record where it stands (unless `before` moves it).

    Deprecated form, kept for code written against the priority numbers:
    ``register_rse_impl(name, fn, is_available, priority, exportable=False)``.
    """
    if isinstance(impl, str):
        impl, before = _legacy_record(impl, *legacy_args, **legacy_kwargs)
    elif legacy_args or legacy_kwargs:
        raise TypeError("register_rse_impl(impl: RSEImpl, before=None): got extra arguments")
    if before is None or before == impl.name:
        _REGISTRY[impl.name] = impl  # a new name goes last, a known one stays where it is
        return impl
    get_rse_impl(before)  # ValueError for an unknown name
    entries = [(n, i) for n, i in _REGISTRY.items() if n != impl.name]
    entries.insert([n for n, _ in entries].index(before), (impl.name, impl))
    _REGISTRY.clear()
    _REGISTRY.update(entries)
    return impl


def unregister_rse_impl(name: str) -> None:
    """Remove ``impl=name`` (KeyError if it is not registered)."""
    del _REGISTRY[name]


def get_rse_impl(name: str) -> RSEImpl:
    """The registered implementation `name`; ValueError naming the choices otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"rse_attention: unknown impl {name!r}; registered: "
                         f"{['auto'] + rse_impl_names()}")
    return _REGISTRY[name]


def rse_impls() -> List[RSEImpl]:
    """Every registered implementation, in ``impl="auto"`` order."""
    return list(_REGISTRY.values())


def rse_impl_names() -> List[str]:
    """The names of :func:`rse_impls`."""
    return list(_REGISTRY)


def available_rse_impls(query: torch.Tensor) -> List[str]:
    """The implementations that can run on `query`'s device and dtype, in ``impl="auto"``
    order: the first one is what ``"auto"`` picks (once it passes the self-check)."""
    return [i.name for i in _REGISTRY.values() if i.is_available(query)]


# --- the deprecated priority form ------------------------------------------------------------

# The priorities the built-in implementations had before rse_backends declared the order: only
# to place an implementation registered the old way where its number put it.
_OLD_PRIORITIES = {"triton": 10, "flex": 20, "cpp": 30, "chunked": 40, "export": 90,
                   "reference": 100}


@dataclass(frozen=True)
class _PredicateImpl(RSEImpl):
    """A record registered the old way: a predicate without a reason, and a priority."""

    predicate: Callable[[torch.Tensor], bool] = None
    priority: int = 0

    def why_not(self, query):
        return "" if self.predicate(query) else f"{self.name!r}: its is_available is False"


def _legacy_record(name, fn, is_available, priority, exportable=False):
    """(record, the name it goes before) of a deprecated registration."""
    warnings.warn("register_rse_impl(name, fn, is_available, priority) is deprecated: register "
                  "an RSEImpl record (rsp_d2/layers/rse_backends.py declares the 'auto' order)",
                  DeprecationWarning, stacklevel=3)
    old = dict(_OLD_PRIORITIES)
    old.update((n, i.priority) for n, i in _REGISTRY.items() if isinstance(i, _PredicateImpl))
    before = next((n for n in _REGISTRY if n != name and old.get(n, priority) > priority), None)
    return _PredicateImpl(name, fn, exportable=exportable, predicate=is_available,
                          priority=priority), before
