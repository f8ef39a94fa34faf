"""Synthetic street scenes in the exact on-disk layout of Cityscapes (gtFine).

Per image the polygons json is written first and every label image is derived from it with
cityscapesscripts' own converters, as the real dataset was: ``json2labelImg`` for
``_labelIds.png`` and ``_color.png``, ``json2instanceImg.createInstanceImage`` for
``_instanceIds.png`` and, over the whole tree, ``createTrainIdLabelImgs`` for
``_labelTrainIds.png``.
"""

import contextlib
import io
import json
import os

import numpy as np
from PIL import Image

from .publish import publish_generated
from .scenes import make_street_scene, rasterize
from .textures import render_image

__all__ = [
    "CITIES",
    "CITYSCAPES_IMAGE_SIZE",
    "KIND_TO_CITYSCAPES",
    "cityscapes_train_classes",
    "generate_cityscapes",
    "write_cityscapes",
]

# (height, width): Cityscapes' 1:2 aspect at a quarter of its 1024 x 2048 resolution.
CITYSCAPES_IMAGE_SIZE = (256, 512)
# Real Cityscapes city names; images are spread over the cities of their split round-robin.
CITIES = {"train": ("aachen", "bochum", "bremen"), "val": ("frankfurt", "lindau", "munster")}
# Scene kind -> Cityscapes label name (cityscapesscripts.helpers.labels).
KIND_TO_CITYSCAPES = {
    "sky": "sky",
    "building": "building",
    "sidewalk": "sidewalk",
    "terrain": "terrain",
    "road": "road",
    "vegetation": "vegetation",
    "pole": "pole",
    "traffic_sign": "traffic sign",
    "car": "car",
    "bicycle": "bicycle",
    "motorcycle": "motorcycle",
    "person": "person",
    "rider": "rider",
    "ego_vehicle": "ego vehicle",  # trainId 255: exercises the ignore label
}
_VERSION = 1  # bump when the output changes, so cached datasets are regenerated
_DATASET_SALT = 1  # separates the random streams of the Cityscapes and COCO generators


def cityscapes_train_classes():
    """Names of the 19-class trainIds this generator draws, in trainId order."""
    from cityscapesscripts.helpers.labels import name2label

    ids = sorted(
        name2label[n].trainId for n in KIND_TO_CITYSCAPES.values() if name2label[n].trainId != 255
    )
    return [next(l.name for l in name2label.values() if l.trainId == t) for t in ids]


def _file_stem(split, index, num_images):
    cities = CITIES[split][: max(1, min(len(CITIES[split]), num_images))]
    city = cities[index % len(cities)]
    return city, f"{city}_{index:06d}_000019"


def _write_image(out_dir, split, index, num_images, seed):
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    rng = np.random.default_rng([seed, _DATASET_SALT, ("train", "val").index(split), index])
    height, width = CITYSCAPES_IMAGE_SIZE
    scene = make_street_scene(rng, height, width, poles=True, ego_vehicle=True)
    image = render_image(scene, rasterize(scene))

    city, stem = _file_stem(split, index, num_images)
    img_dir = os.path.join(out_dir, "leftImg8bit", split, city)
    gt_dir = os.path.join(out_dir, "gtFine", split, city)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    Image.fromarray(image).save(os.path.join(img_dir, f"{stem}_leftImg8bit.png"))

    polygons = {
        "imgHeight": height,
        "imgWidth": width,
        "objects": [
            {"label": KIND_TO_CITYSCAPES[o.kind], "polygon": [list(p) for p in o.polygon]}
            for o in scene.objects
        ],
    }
    json_path = os.path.join(gt_dir, f"{stem}_gtFine_polygons.json")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(polygons, f, indent=4)
    base = os.path.join(gt_dir, f"{stem}_gtFine_")
    json2labelImg(json_path, base + "labelIds.png", "ids")
    json2labelImg(json_path, base + "color.png", "color")
    # json2instanceImg saves PIL mode "I", which Pillow 13 can no longer write as PNG; the same
    # image saved as uint16 gives the identical 16-bit PNG of the real dataset.
    annotation = Annotation()
    annotation.fromJsonFile(json_path)
    instance_ids = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.int64)
    Image.fromarray(instance_ids.astype(np.uint16)).save(base + "instanceIds.png")


@contextlib.contextmanager
def _cityscapes_env(path):
    """createTrainIdLabelImgs reads its root from the environment only; restore it afterwards."""
    old = os.environ.get("CITYSCAPES_DATASET")
    os.environ["CITYSCAPES_DATASET"] = path
    try:
        yield
    finally:
        if old is None:
            del os.environ["CITYSCAPES_DATASET"]
        else:
            os.environ["CITYSCAPES_DATASET"] = old


def write_cityscapes(out_dir, *, seed=0, num_train=24, num_val=8):
    """Write a complete synthetic Cityscapes tree (leftImg8bit/, gtFine/) into ``out_dir``.

    Not crash-safe by itself: ``generate_cityscapes`` calls it on a temporary directory.
    """
    from cityscapesscripts.preparation import createTrainIdLabelImgs

    for split, count in (("train", num_train), ("val", num_val)):
        for index in range(count):
            _write_image(out_dir, split, index, count, seed)
    with _cityscapes_env(os.path.abspath(out_dir)), contextlib.redirect_stdout(io.StringIO()):
        createTrainIdLabelImgs.main()  # the official tool, over every *_polygons.json


def generate_cityscapes(root, *, seed=0, num_train=24, num_val=8):
    """Create ``root/cityscapes`` crash-safely; a no-op if it is complete for these arguments.

    Returns:
        True if the dataset was (re)generated, False if an identical one was already there.
    """
    return publish_generated(os.path.join(os.fspath(root), "cityscapes"), __name__, _VERSION,
                             write_cityscapes, seed=seed, num_train=num_train, num_val=num_val)
