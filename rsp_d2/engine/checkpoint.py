"""Checkpoints: written atomically, read without running code, and loaded only when they fit
the model."""
import os
import re
from typing import Dict, Optional

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

from ..utils.errors import InputError
from ..utils.file_io import AtomicWriter
from .resume import require_checkpoint
from .safe_load import read_checkpoint

__all__ = ["AtomicDetectionCheckpointer", "check_checkpoint", "load_model", "local_checkpoint",
           "model_config_of"]

# MODEL.* keys that leave the model itself unchanged: where the weights come from and run, how
# the relation is computed, and settings of training (losses, sampling) or of inference
# (thresholds, top-k, the panoptic combination). A checkpoint must load whatever they are:
# the demo's --confidence-threshold, an evaluation with other test thresholds.
_MODEL_NEUTRAL_KEYS = {"MODEL.WEIGHTS", "MODEL.DEVICE", "MODEL.SEM_SEG_HEAD.RSP.IMPL"}
_MODEL_NEUTRAL = re.compile(r"_TEST$|_TRAIN$|LOSS|^MODEL\.PANOPTIC_FPN\.COMBINE\.|"
                            r"\.(BATCH_SIZE_PER_IMAGE|POSITIVE_FRACTION|SMOOTH_L1_BETA)$")
_SHOWN = 3  # names listed in a refusal


def _shapes_model(key: str) -> bool:
    return key not in _MODEL_NEUTRAL_KEYS and not _MODEL_NEUTRAL.search(key)


def model_config_of(cfg) -> Dict[str, str]:
    """The MODEL.* keys of `cfg` that define the model (architecture and parameters, not the
    training or test-time settings), flattened to {key: repr(value)}: saved in every checkpoint,
    so that a checkpoint of another model is recognized."""
    flat = {}

    def walk(node, prefix):
        for name, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{name}.")
            elif _shapes_model(prefix + name):
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

    Files are read by :func:`read_checkpoint` (no code in them runs), or taken from
    ``preloaded`` ({path: what the file holds}) when the caller read them already.

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
        self.preloaded: Dict[str, dict] = {}
        self._loading = None

    def save(self, name, **kwargs):
        if self.model_config is not None:
            kwargs.setdefault("model_config", self.model_config)
        super().save(name, **kwargs)

    def load(self, path, *args, **kwargs):
        self._loading = path
        return super().load(path, *args, **kwargs)

    def get_checkpoint_file(self) -> str:
        # fvcore joins last_checkpoint's content to save_dir, so an absolute name or "../"
        # would load a file from anywhere
        return require_checkpoint(self.save_dir)

    def _load_file(self, filename):
        """Detectron2's formats (model-zoo and Caffe2 ``.pkl``, pycls ``.pyth``, ``.pth``),
        each file read once by :func:`read_checkpoint`, which runs no code from it."""
        try:
            if filename.endswith(".pkl"):
                return _from_pkl(self._read(filename))
            if filename.endswith(".pyth"):
                return _from_pycls(self._read(filename), filename)
            return super()._load_file(filename)  # the .pth path, through _torch_load
        except InputError:
            raise
        except Exception as e:
            raise InputError(f"cannot load checkpoint {filename}: {type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]}") from e

    def _torch_load(self, f):
        return self._read(f)

    def _read(self, filename):
        # what the launcher's checks read already, else the file
        if filename in self.preloaded:
            return self.preloaded.pop(filename)
        return read_checkpoint(filename)

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


def _from_pkl(data) -> dict:
    """Detectron2's reading of a ``.pkl``: its model-zoo format as it is, else Caffe2 blobs."""
    if not isinstance(data, dict):
        raise InputError(f"expected a dict of arrays, got {type(data).__name__}")
    if "model" in data and "__author__" in data:
        return data
    data = data.get("blobs", data)  # detection models have "blobs", ImageNet models do not
    return {"model": {k: v for k, v in data.items() if not k.endswith("_momentum")},
            "__author__": "Caffe2", "matching_heuristics": True}


def _from_pycls(data, filename: str) -> dict:
    if not isinstance(data, dict) or "model_state" not in data:
        raise InputError(f"cannot load checkpoint {filename}: a pycls .pyth file must hold "
                         "'model_state'")
    return {"model": {k: v for k, v in data["model_state"].items()
                      if not k.endswith("num_batches_tracked")},
            "__author__": "pycls", "matching_heuristics": True}


def check_checkpoint(path: str, what: str = "checkpoint") -> None:
    """Raise InputError unless `path` is a local file or a URL (``scheme://``).

    An empty path is refused as well: Detectron2 would silently keep the random
    initialization, and drawings of an untrained model mean nothing.
    """
    if not path:
        raise InputError(f"no {what} given (MODEL.WEIGHTS is empty): set MODEL.WEIGHTS among "
                         "the config overrides to the .pth written by train_net.py, e.g. "
                         "MODEL.WEIGHTS output/.../model_final.pth")
    if "://" not in path and not os.path.isfile(path):
        raise InputError(f"{what} not found: {path} (expected a .pth/.pkl file written by "
                         "Detectron2's DetectionCheckpointer)")


def local_checkpoint(path: str) -> str:
    """`path`, or for a URL (``https://``, ``detectron2://``) the local copy Detectron2's
    PathManager downloads once and caches.

    Raises:
        InputError: the URL cannot be fetched (no network, a wrong address).
    """
    if "://" not in path:
        return path
    try:
        return PathManager.get_local_path(path)
    except Exception as e:  # noqa: BLE001 - urllib, socket and iopath errors alike
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise InputError(f"MODEL.WEIGHTS {path}: cannot download it ({reason}): download the "
                         "file where there is network and set MODEL.WEIGHTS to its local path") \
            from None


def load_model(cfg, *, strict: bool = True) -> torch.nn.Module:
    """``build_model(cfg)`` in eval mode with ``cfg.MODEL.WEIGHTS`` loaded.

    Args:
        strict: refuse (InputError) a checkpoint that does not fit the model exactly (see
            :class:`AtomicDetectionCheckpointer`); otherwise the parameters it lacks keep their
            random initialization, as in Detectron2.
    """
    check_checkpoint(cfg.MODEL.WEIGHTS)
    path = local_checkpoint(cfg.MODEL.WEIGHTS)
    model = build_model(cfg).eval()
    AtomicDetectionCheckpointer(model, model_config=model_config_of(cfg), strict=strict).load(path)
    return model
