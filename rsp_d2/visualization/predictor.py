"""Single-image inference as Detectron2's ``DefaultPredictor`` does it, with the checkpoint
checked (:func:`load_model`) and the resized network input kept for drawing."""
from typing import Dict, Tuple

import numpy as np
import torch

import detectron2.data.transforms as T

from .loading import InputError, load_model

__all__ = ["Predictor"]


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
