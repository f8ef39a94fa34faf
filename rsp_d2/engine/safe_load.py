"""Reading a checkpoint file without running code from it.

A pickle names the functions its loader calls: a ``.pth`` or ``.pkl`` from an untrusted source
can make ``torch.load`` / ``pickle.load`` call ``os.system``. torch >= 2.6 refuses such files by
default, torch 2.3 (the pinned stack) does not, and Detectron2's checkpointer passes nothing.
So every checkpoint this package reads goes through :func:`read_checkpoint`:

* ``.pth`` / ``.pyth`` (and any other name): ``torch.load(weights_only=True)``, PyTorch's own
  allow-list of tensors, storages, numbers, strings and containers;
* ``.pkl`` (Detectron2 model-zoo and Caffe2 ImageNet weights, numpy arrays in dicts): a
  restricted unpickler that resolves only numpy's array reconstruction and plain containers.

Anything else in the file is refused before it is called, with an :class:`InputError` that names
the path and the object.
"""
import pickle
import re
from typing import Any

import torch

from ..utils.errors import InputError

__all__ = ["read_checkpoint"]

# (module, name) a model-zoo .pkl may resolve: numpy arrays and scalars (both numpy 1.x and 2.x
# module names), dtypes, OrderedDict, and the byte decoding of protocol-2 pickles.
_PKL_ALLOWED = {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
}

_WHY = ("a checkpoint may hold only tensors, arrays, numbers, strings and containers, and "
        "loading this one could run code: use weights from a source you trust, re-saved as a "
        "plain state dict")


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _PKL_ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")


def _read_pkl(path: str) -> Any:
    with open(path, "rb") as f:
        # latin1: the model-zoo files are Python 2 pickles of numpy arrays (Detectron2 does so)
        return _NumpyOnlyUnpickler(f, encoding="latin1").load()


def _read_torch(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch 2.3: "Unsupported class posix.system"; torch >= 2.6: "GLOBAL posix.system ..."
        found = re.search(r"(?:Unsupported class|GLOBAL) ([\w.]+)", str(e))
        raise _Refused(found.group(1) if found else " ".join(str(e).split())[-200:]) from e


def read_checkpoint(path: str) -> Any:
    """The object stored in the local checkpoint file `path`, read once and without running code
    from it (see the module docstring).

    Raises:
        InputError: ``cannot load checkpoint PATH: ...``: the file holds a disallowed object
            (named), is not a checkpoint, or cannot be read.
    """
    try:
        return _read_pkl(path) if path.endswith(".pkl") else _read_torch(path)
    except _Refused as e:
        raise InputError(f"cannot load checkpoint {path}: it holds a disallowed object "
                         f"{e.name!r}; {_WHY}") from None
    except Exception as e:  # noqa: BLE001 - truncated, not a pickle, unreadable: one line each
        raise InputError(f"cannot load checkpoint {path}: {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]}") from e
