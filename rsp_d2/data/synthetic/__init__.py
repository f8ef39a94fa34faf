"""Small synthetic datasets in the exact on-disk layouts of Cityscapes and COCO panoptic.

``generate_datasets(root)`` writes ``root/cityscapes`` and ``root/coco`` such that Detectron2's
builtin ``cityscapes_fine_sem_seg_{train,val}`` and ``coco_2017_{train,val}_panoptic_separated``
load them unchanged with ``DETECTRON2_DATASETS=root``. Street scenes are procedural and
textured; telling ``rider`` from ``person`` needs context (see ``scenes``).
"""

from .cityscapes import (
    CITYSCAPES_IMAGE_SIZE,
    cityscapes_train_classes,
    generate_cityscapes,
    write_cityscapes,
)
from .coco_panoptic import COCO_SIZE_RANGE, generate_coco_panoptic, write_coco_panoptic
from .scenes import Scene, SceneObject, make_street_scene, rasterize
from .textures import render_image

__all__ = [
    "CITYSCAPES_IMAGE_SIZE",
    "COCO_SIZE_RANGE",
    "DEFAULT_SIZES",
    "Scene",
    "SceneObject",
    "cityscapes_train_classes",
    "generate_cityscapes",
    "generate_coco_panoptic",
    "generate_datasets",
    "make_street_scene",
    "rasterize",
    "render_image",
    "write_cityscapes",
    "write_coco_panoptic",
]

# (num_train, num_val) per dataset: small enough to generate in seconds on two cores.
DEFAULT_SIZES = {"cityscapes": (24, 8), "coco": (16, 8)}
_GENERATORS = {"cityscapes": generate_cityscapes, "coco": generate_coco_panoptic}


def generate_datasets(root, *, seed=0, num_train=None, num_val=None, only=None):
    """Generate (or keep, if already complete for these arguments) the synthetic datasets.

    Args:
        root: the folder to use as ``DETECTRON2_DATASETS``.
        seed: same seed and sizes give byte-identical files.
        num_train, num_val: images per split for every dataset; ``DEFAULT_SIZES`` when None.
        only: "cityscapes" or "coco" to make just that one; both when None.

    Returns:
        {"cityscapes": bool, "coco": bool} for the datasets handled: True if (re)generated,
        False if an identical complete dataset was already in place.
    """
    if only is not None and only not in _GENERATORS:
        raise ValueError(f"only={only!r}: expected one of {sorted(_GENERATORS)} or None")
    names = [only] if only else list(_GENERATORS)
    done = {}
    for name in names:
        default_train, default_val = DEFAULT_SIZES[name]
        done[name] = _GENERATORS[name](
            root,
            seed=seed,
            num_train=default_train if num_train is None else num_train,
            num_val=default_val if num_val is None else num_val,
        )
    return done
