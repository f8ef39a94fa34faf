"""Single-image inference as Detectron2's ``DefaultPredictor`` does it, with the image and the
checkpoint checked (:func:`read_image`, :func:`load_model`) and the resized network input kept
for drawing."""
import os
from typing import Dict, Tuple

import numpy as np
import torch

import detectron2.data.transforms as T
from detectron2.data.detection_utils import read_image as _d2_read_image

from ..utils.errors import InputError
from .checkpoint import load_model

__all__ = ["Predictor", "read_image"]


class Predictor:
    """``predictor(image_bgr) -> predictions`` for one (H, W, 3) uint8 BGR image.

    Resizes the shorter side to INPUT.MIN_SIZE_TEST (at most INPUT.MAX_SIZE_TEST on the longer
    one), feeds the model in INPUT.FORMAT, and returns its outputs at the original size.
    """

    def __init__(self, cfg, *, strict: bool = True, model: torch.nn.Module = None):
        """
        Args:
            cfg: a config whose MODEL.WEIGHTS is loaded (unless `model` is given).
            strict: see :func:`load_model`.
            model: an already loaded model in eval mode (tests, or several uses of one model).
        """
        if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
            raise InputError(f"INPUT.FORMAT={cfg.INPUT.FORMAT!r}: expected 'RGB' or 'BGR'")
        self.cfg = cfg
        self.model = model if model is not None else load_model(cfg, strict=strict)
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)

    def preprocess(self, image_bgr: np.ndarray) -> Tuple[Dict, np.ndarray]:
        """The model's input dict and the resized image as (h, w, 3) uint8 RGB."""
        image = image_bgr[:, :, ::-1] if self.cfg.INPUT.FORMAT == "RGB" else image_bgr
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
        rgb = resized if self.cfg.INPUT.FORMAT == "RGB" else resized[:, :, ::-1]
        return {"image": tensor, "height": height, "width": width}, np.ascontiguousarray(rgb)

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray) -> Dict:
        inputs, _ = self.preprocess(image_bgr)
        return self.model([inputs])[0]


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
