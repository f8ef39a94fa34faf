"""Single-image inference as Detectron2's ``DefaultPredictor`` does it, with the image and the
checkpoint checked (:func:`read_image`, :func:`check_image`, :func:`load_model`) and the resized
network input kept for drawing."""
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F

import detectron2.data.transforms as T

from ..data.image_io import read_image
from ..utils.errors import InputError
from .checkpoint import load_model

__all__ = ["Predictor", "check_image", "read_image", "upsampled_argmax"]

# Elements of one strip of upsampled logits in upsampled_argmax (16 MB of float32): small next
# to a large image's labels, and a strip stays in cache better than a larger one.
_STRIP_ELEMENTS = 1 << 22


class Predictor:
    """``predictor(image_bgr) -> predictions`` for one (H, W, 3) uint8 BGR image.

    Resizes the shorter side to INPUT.MIN_SIZE_TEST (at most INPUT.MAX_SIZE_TEST on the longer
    one), feeds the model in INPUT.FORMAT, and returns its outputs at the original size: the
    (K, H, W) logits, or with ``logits=False`` only the (H, W) class ids (large images).
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
        """The model's input dict and the resized image as (h, w, 3) uint8 RGB.

        Raises:
            InputError: `image_bgr` is not an (H, W, 3) image of 0-255 values (:func:`check_image`).
        """
        image_bgr = check_image(image_bgr)
        image = image_bgr[:, :, ::-1] if self.cfg.INPUT.FORMAT == "RGB" else image_bgr
        height, width = image.shape[:2]
        transform = self.aug.get_transform(image)
        if isinstance(transform, T.ResizeTransform) and min(transform.new_h, transform.new_w) < 1:
            # An extreme aspect ratio (1 x 1000): MAX_SIZE_TEST rounds the short side to 0 pixels.
            transform = T.ResizeTransform(height, width, max(1, transform.new_h),
                                          max(1, transform.new_w), transform.interp)
        resized = transform.apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
        rgb = resized if self.cfg.INPUT.FORMAT == "RGB" else resized[:, :, ::-1]
        return {"image": tensor, "height": height, "width": width}, np.ascontiguousarray(rgb)

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray, *, logits: bool = True) -> Dict:
        """
        Args:
            image_bgr: (H, W, 3) uint8 BGR, as ``cv2.imread`` or ``read_image(path)`` give.
            logits: True: the model's outputs at the image's size, "sem_seg" being (K, H, W)
                float32 logits (K * H * W * 4 bytes: 1.8 GB for 19 classes at 24 megapixels).
                False: "sem_seg" is replaced by "sem_seg_labels", the (H, W) int64 class ids
                (the argmax of those logits, :func:`upsampled_argmax`), and the full-size
                logits are never made; for large images.

        Raises:
            InputError: `image_bgr` is not an (H, W, 3) image of 0-255 values (:func:`check_image`).
        """
        inputs, _ = self.preprocess(image_bgr)
        if logits:
            return self.model([inputs])[0]
        if self.cfg.MODEL.META_ARCHITECTURE != "SemanticSegmentor":
            # Instances and panoptic ids are made at the output size inside the model.
            outputs = self.model([inputs])[0]
            if "sem_seg" in outputs:
                outputs["sem_seg_labels"] = outputs.pop("sem_seg").argmax(dim=0)
            return outputs
        h, w = inputs["image"].shape[-2:]
        # "height"/"width" of the network input: the logits stay at the network's resolution.
        outputs = self.model([dict(inputs, height=h, width=w)])[0]
        sem_seg = outputs.pop("sem_seg")
        outputs["sem_seg_labels"] = upsampled_argmax(sem_seg, (inputs["height"], inputs["width"]))
        return outputs


def upsampled_argmax(logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """The class ids of the bilinearly upsampled logits,
    ``F.interpolate(logits[None], size, mode="bilinear", align_corners=False)[0].argmax(0)``,
    computed a strip of output rows at a time so that the (K, H, W) logits never exist.

    Args:
        logits: (K, h, w) at the network's resolution.
        size: (H, W) of the output.

    Returns:
        (H, W) int64 on `logits`' device. Equal to the expression above up to float rounding
        (the two passes of the bilinear interpolation are summed in another order).
    """
    k, h, w = logits.shape
    height, width = size
    out = torch.empty(height, width, dtype=torch.long, device=logits.device)
    # Source row of each output row as PyTorch's bilinear interpolation computes it
    # (align_corners=False, clamped at the first row): rows y0, y0 + 1 with weights 1 - f, f.
    src = ((torch.arange(height, dtype=torch.float64) + 0.5) * (h / height) - 0.5).clamp(min=0)
    y0 = src.floor().long().clamp(max=h - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    frac = (src - y0).to(logits.dtype).to(logits.device)
    y0, y1 = y0.to(logits.device), y1.to(logits.device)
    rows = max(1, _STRIP_ELEMENTS // max(1, k * width))
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        f = frac[r0:r1].view(1, -1, 1)
        strip = torch.lerp(logits[:, y0[r0:r1]], logits[:, y1[r0:r1]], f)  # (K, r, w)
        strip = F.interpolate(strip, size=width, mode="linear", align_corners=False)  # (K, r, W)
        out[r0:r1] = strip.max(dim=0).indices  # as argmax (first maximum), faster over dim 0
    return out


def check_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """`image` as an (H, W, 3) uint8 array, or InputError naming its shape, dtype and the fix.

    Integer arrays whose values are all in 0-255 are converted; float arrays are refused (their
    range is ambiguous: 0-1 or 0-255), and so are grayscale (H, W) / (H, W, 1), 4-channel and
    empty arrays.
    """
    if isinstance(image, torch.Tensor):
        raise InputError(f"{what}: a torch.Tensor {tuple(image.shape)}: expected a numpy array "
                         "(H, W, 3) uint8 BGR, e.g. tensor.permute(1, 2, 0).numpy() of a "
                         "(3, H, W) uint8 tensor")
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what}: a {type(image).__name__}: expected a numpy array "
                         "(H, W, 3) uint8 BGR, e.g. from cv2.imread or rsp_d2.engine.read_image")
    desc = f"{what}: {image.dtype} array of shape {image.shape}"
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise InputError(f"{desc} is grayscale: expected (H, W, 3) BGR; convert it with "
                         "cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)")
    if image.ndim == 3 and image.shape[2] == 4:
        raise InputError(f"{desc} has 4 channels: expected (H, W, 3) BGR; drop the alpha "
                         "channel with image[:, :, :3]")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{desc}: expected (H, W, 3) BGR")
    if image.size == 0:
        raise InputError(f"{desc} is empty: expected an image of at least 1 x 1 pixel")
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise InputError(f"{desc} contains NaN or infinite values: expected uint8 values "
                             "0-255")
        raise InputError(f"{desc} (values {image.min():.4g} to {image.max():.4g}): expected "
                         "uint8 values 0-255; convert it, e.g. "
                         "(image * 255).round().astype(np.uint8) for values in 0-1")
    if np.issubdtype(image.dtype, np.integer):
        low, high = int(image.min()), int(image.max())
        if low >= 0 and high <= 255:
            return image.astype(np.uint8)
        hint = (" (16-bit: (image >> 8).astype(np.uint8))" if image.dtype == np.uint16 else "")
        raise InputError(f"{desc} (values {low} to {high}): expected uint8 values 0-255{hint}")
    raise InputError(f"{desc}: expected uint8 values 0-255")
