"""Configs, checkpoints and images for the demo and the visualization tools, each checked up
front so that bad input ends in one error naming the file and what was expected."""
import os
from typing import Optional, Sequence

import numpy as np
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data.detection_utils import read_image as _d2_read_image
from detectron2.modeling import build_model

from ..config import add_rsp_config

__all__ = ["InputError", "load_config", "check_checkpoint", "read_image", "load_model"]


class InputError(ValueError):
    """Bad user input (a path, a config, a pixel); the CLIs print it as one line and exit."""


def load_config(config_file: str, opts: Sequence[str] = (), *, weights: Optional[str] = None,
                freeze: bool = True):
    """A Detectron2 config with the RSP keys, merged from `config_file`, then `opts`
    (KEY VALUE pairs), then `weights` as MODEL.WEIGHTS when given. MODEL.DEVICE becomes "cpu"
    when CUDA is unavailable, so GPU-trained configs run anywhere."""
    if not os.path.isfile(config_file):
        raise InputError(f"config file not found: {config_file} (expected a Detectron2 .yaml)")
    cfg = get_cfg()
    add_rsp_config(cfg)
    try:
        cfg.merge_from_file(config_file)
    except Exception as e:  # yaml or key errors: say which file
        raise InputError(f"cannot merge config file {config_file}: {type(e).__name__}: {e}") from e
    try:
        cfg.merge_from_list(list(opts))
    except Exception as e:
        raise InputError(f"bad --opts {list(opts)}: {type(e).__name__}: {e} (expected KEY VALUE "
                         "pairs of existing config keys)") from e
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg


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


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """(H, W, 3) uint8 in `format` ("BGR" or "RGB"), EXIF orientation applied."""
    if not os.path.isfile(path):
        raise InputError(f"image not found: {path}")
    try:
        image = _d2_read_image(path, format=format)
    except Exception as e:
        raise InputError(f"cannot read image {path}: {type(e).__name__}: {e} (expected an image "
                         "file that PIL can decode: png, jpg, ...)") from e
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"cannot read image {path}: decoded to shape {image.shape}, expected "
                         "(H, W, 3)")
    return image


class _RecordingCheckpointer(DetectionCheckpointer):
    """Keeps what the load could not match, which fvcore only logs."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


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
    checkpointer = _RecordingCheckpointer(model)
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
