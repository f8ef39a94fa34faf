"""The one image reader of the package: dataset images for training and evaluation, and the
images of the demo and the tools.

As Detectron2's ``read_image`` (EXIF orientation applied, alpha dropped, palette and grayscale
expanded to three channels), except that 16-bit grayscale is scaled to 8 bits (value >> 8, as
PIL reads 16-bit RGB), not clipped to white, and that every failure names the file.
"""
import os

import numpy as np
from PIL import Image

from detectron2.data.detection_utils import _apply_exif_orientation, convert_PIL_to_numpy

from ..utils.errors import InputError

__all__ = ["read_image"]

# PIL modes of 16- and 32-bit integer grayscale, which PIL's convert("RGB") clips at 255 (white).
_GRAY_16 = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """(H, W, 3) uint8 in `format` ("BGR" or "RGB"), EXIF orientation applied.

    As Detectron2's ``read_image`` (alpha dropped, palette and grayscale expanded to three
    channels), except that 16-bit grayscale is scaled to 8 bits (value >> 8, as PIL reads 16-bit
    RGB), not clipped. Raises InputError for a missing or undecodable file, and for 32-bit float
    or out-of-range 32-bit integer pixels.
    """
    if not os.path.isfile(path):
        raise InputError(f"image not found: {path}")
    try:
        with open(path, "rb") as f:
            pil = _apply_exif_orientation(Image.open(f))
            pil = _to_8_bits(pil, path)
            image = convert_PIL_to_numpy(pil, format)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read image {path}: {type(e).__name__}: {e} (expected an image "
                         "file that PIL can decode: png, jpg, ...)") from e
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"cannot read image {path}: decoded to shape {image.shape}, expected "
                         "(H, W, 3)")
    return image


def _to_8_bits(pil: Image.Image, path: str) -> Image.Image:
    """`pil`, or its 8-bit grayscale ("L") version when it has more bits per pixel."""
    if pil.mode == "F":
        raise InputError(f"cannot read image {path}: 32-bit float pixels (PIL mode 'F'), whose "
                         "range is unknown: save it with 8 or 16 bits per channel")
    if pil.mode not in _GRAY_16 and pil.mode != "I":
        return pil
    values = np.asarray(pil)
    if pil.mode == "I":  # 32-bit; older Pillow reads 16-bit PNG grayscale so
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 65535:
            raise InputError(f"cannot read image {path}: 32-bit integer pixels with values "
                             f"{low} to {high}: expected 8 or 16 bits per channel")
    return Image.fromarray((values.astype(np.uint32) >> 8).astype(np.uint8))  # "L"
