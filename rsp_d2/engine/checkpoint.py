"""Checkpoints: written atomically, and loaded only when they fit the model."""
import os
from typing import Dict, Optional

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from ..utils.errors import InputError
from ..utils.file_io import AtomicWriter

__all__ = ["AtomicDetectionCheckpointer", "check_checkpoint", "load_model", "model_config_of"]

# MODEL.* keys that do not change the weights: where they live, how the relation is computed.
_WEIGHT_NEUTRAL_KEYS = {"MODEL.WEIGHTS", "MODEL.DEVICE", "MODEL.SEM_SEG_HEAD.RSP.IMPL"}
_SHOWN = 3  # names listed in a refusal


def model_config_of(cfg) -> Dict[str, str]:
    """The MODEL.* keys of `cfg` that shape the weights, flattened to {key: repr(value)}:
    saved in every checkpoint, so that a checkpoint of another model is recognized."""
    flat = {}

    def walk(node, prefix):
        for name, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}.")
            elif prefix + name not in _WEIGHT_NEUTRAL_KEYS:
                flat[prefix + name] = repr(value)

    walk(cfg.MODEL, "MODEL.")
    return flat


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

    Every load failure is an InputError ``cannot load checkpoint PATH: reason``. With
    `strict`, a checkpoint is refused (before any optimizer or trainer state is touched) when
    it was saved from a different model config, or leaves parameters of the model missing,
    wrongly shaped or unused; without it, Detectron2's partial loading (ImageNet weights into
    a detector) is kept.

    Attributes:
        incompatible: fvcore's ``_IncompatibleKeys`` of the last load (None before one).
        strict: refuse checkpoints that do not fit the model exactly (see above).
    """

    incompatible = None

    def __init__(self, model, save_dir="", *, save_to_disk=None,
                 model_config: Optional[Dict[str, str]] = None, strict: bool = False,
                 **checkpointables):
        """
        Args:
            model_config: :func:`model_config_of` the model's config: saved with every
                checkpoint and, when `strict`, compared with a loaded checkpoint's.
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = _AtomicWritePathManager(self.path_manager)
        self.model_config = model_config
        self.strict = strict
        self._loading = None

    def save(self, name, **kwargs):
        if self.model_config is not None:
            kwargs.setdefault("model_config", self.model_config)
        super().save(name, **kwargs)

    def load(self, path, *args, **kwargs):
        self._loading = path
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except Exception as e:
            raise InputError(f"cannot load checkpoint {filename}: {type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]}") from e

    def _load_model(self, checkpoint):
        if self.strict:
            self._check_model_config(checkpoint.get("model_config"))
        self.incompatible = super()._load_model(checkpoint)
        if self.strict:
            self._check_incompatible(self.incompatible)
        return self.incompatible

    def _refuse(self, reason: str):
        raise InputError(f"cannot load checkpoint {self._loading}: {reason}")

    def _check_model_config(self, saved: Optional[Dict[str, str]]):
        if saved is None or self.model_config is None:
            return  # saved by another tool: the parameter check below still applies
        differing = sorted(k for k in set(saved) | set(self.model_config)
                           if k in saved and k in self.model_config
                           and saved[k] != self.model_config[k])
        if differing:
            shown = ", ".join(f"{k} {saved[k]} (config: {self.model_config[k]})"
                              for k in differing[:_SHOWN])
            more = f" and {len(differing) - _SHOWN} more" if len(differing) > _SHOWN else ""
            self._refuse(f"it was saved from a different model config: {shown}{more}; use the "
                         "config (and MODEL.* overrides) it was trained with")

    def _check_incompatible(self, incompatible):
        problems = [(f"{len(keys)} {what}", keys) for what, keys in (
            ("parameters of the model missing", incompatible.missing_keys),
            ("wrongly shaped", [k for k, *_ in incompatible.incorrect_shapes]),
            ("entries not in the model", incompatible.unexpected_keys)) if keys]
        if problems:
            detail = "; ".join(f"{what}, e.g. {keys[:_SHOWN]}" for what, keys in problems)
            self._refuse(f"it does not fit the model built from the config ({detail}): it was "
                         "saved from a different model (check --config-file and the MODEL.* "
                         "overrides)")


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
        strict: refuse (InputError) a checkpoint that does not fit the model exactly (see
            :class:`AtomicDetectionCheckpointer`); otherwise the parameters it lacks keep their
            random initialization, as in Detectron2.
    """
    path = cfg.MODEL.WEIGHTS
    check_checkpoint(path)
    model = build_model(cfg).eval()
    AtomicDetectionCheckpointer(model, model_config=model_config_of(cfg), strict=strict).load(path)
    return model
