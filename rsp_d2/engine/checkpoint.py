"""Checkpoints: written atomically, and loaded only when they fit the model."""
import os

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from ..utils.errors import InputError
from ..utils.file_io import AtomicWriter

__all__ = ["AtomicDetectionCheckpointer", "check_checkpoint", "load_model"]


class _AtomicWritePathManager:
    """Delegates to an iopath PathManager, but opens local files for writing atomically."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def open(self, path, mode="r", **kwargs):
        if mode in ("w", "wb") and "://" not in str(path) and not kwargs:
            return AtomicWriter(path, mode)
        return self._path_manager.open(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self._path_manager, name)


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose checkpoint and ``last_checkpoint`` writes are atomic,
    and which keeps what a load could not match (fvcore only logs it).

    fvcore's ``Checkpointer.save`` streams ``torch.save`` straight into the final file and
    then rewrites ``last_checkpoint`` in place: a run killed meanwhile leaves a truncated
    ``.pth`` or an empty ``last_checkpoint``, and ``--resume`` then fails. Both writes go
    through ``self.path_manager.open``, so routing that through :class:`AtomicWriter` fixes
    both without re-implementing ``save``.

    Attributes:
        incompatible: fvcore's ``_IncompatibleKeys`` of the last load (None before one).
    """

    incompatible = None

    def __init__(self, model, save_dir="", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = _AtomicWritePathManager(self.path_manager)

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def check_checkpoint(path: str, what: str = "checkpoint") -> None:
    """Raise InputError unless `path` is a local file or a URL (``scheme://``).

    An empty path is refused as well: Detectron2 would silently keep the random
    initialization, and drawings of an untrained model mean nothing.
    """
    if not path:
        raise InputError(f"no {what} given (MODEL.WEIGHTS is empty): pass the .pth written by "
                         "train_net.py, e.g. --opts MODEL.WEIGHTS output/.../model_final.pth")
    if "://" not in path and not os.path.isfile(path):
        raise InputError(f"{what} not found: {path} (expected a .pth/.pkl file written by "
                         "Detectron2's DetectionCheckpointer)")


def load_model(cfg, *, strict: bool = True) -> torch.nn.Module:
    """``build_model(cfg)`` in eval mode with ``cfg.MODEL.WEIGHTS`` loaded.

    Args:
        strict: raise InputError when the checkpoint lacks (or has wrongly shaped) weights for
            some parameter of the model, i.e. it was trained with another config; otherwise
            those parameters keep their random initialization, as in Detectron2.
    """
    path = cfg.MODEL.WEIGHTS
    check_checkpoint(path)
    model = build_model(cfg).eval()
    checkpointer = AtomicDetectionCheckpointer(model)
    try:
        checkpointer.load(path)
    except Exception as e:
        raise InputError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}") from e
    missing = list(checkpointer.incompatible.missing_keys) if checkpointer.incompatible else []
    if strict and missing:
        raise InputError(
            f"checkpoint {path} has no (or wrongly shaped) weights for {len(missing)} parameters "
            f"of the model built from the config, e.g. {missing[:3]}: it was saved from a "
            "different config (check --config-file and the MODEL.* overrides)")
    return model
