"""COCO panoptic annotations -> the semantic PNGs that Panoptic FPN's semantic branch trains on.

Same output as Detectron2's ``datasets/prepare_panoptic_fpn.py`` (not shipped in its wheel), i.e.
what ``register_coco_panoptic_separated`` expects under ``coco/panoptic_stuff_{split}``: one
single-channel uint8 PNG per panoptic PNG, with the same file name, holding

* 0 for every pixel of a thing category,
* 1..53 for the stuff categories, contiguous in ``COCO_CATEGORIES`` order (this is
  ``stuff_dataset_id_to_contiguous_id`` of ``_get_coco_panoptic_separated_meta``),
* 255 for unlabeled pixels (panoptic id 0).

Unlike the original, malformed input is an error naming the file rather than a silent 255.
"""

import functools
import json
import multiprocessing
import os

import numpy as np
from PIL import Image

from ..utils.file_io import save_image_atomic

__all__ = [
    "IGNORE_LABEL",
    "SPLITS",
    "convert_coco_root",
    "convert_panoptic_json",
    "panoptic_to_semantic",
    "semantic_id_map",
]

IGNORE_LABEL = 255
SPLITS = ("val2017", "train2017")


def semantic_id_map(categories=None):
    """Map a COCO category id to its Panoptic FPN semantic label (things 0, stuff 1..N).

    Args:
        categories: dicts with "id" and "isthing", in the order that defines the stuff labels;
            Detectron2's ``COCO_CATEGORIES`` (133 categories, 53 stuff) when None.
    """
    if categories is None:
        from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES as categories
    stuff = [c["id"] for c in categories if not c["isthing"]]
    if len(stuff) >= IGNORE_LABEL:
        raise ValueError(f"{len(stuff)} stuff categories do not fit below {IGNORE_LABEL}")
    id_map = {c["id"]: 0 for c in categories if c["isthing"]}
    id_map.update({cat_id: i + 1 for i, cat_id in enumerate(stuff)})
    return id_map


def _rgb2id(rgb):
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def panoptic_to_semantic(panoptic_rgb, segments_info, id_map, where="panoptic PNG"):
    """Semantic uint8 map of one panoptic annotation.

    Args:
        panoptic_rgb: (H, W, 3) uint8 array in panopticapi's id = R + 256 G + 256^2 B encoding.
        segments_info: the annotation's list of {"id", "category_id", ...}.
        id_map: from ``semantic_id_map``.
        where: names the annotation in error messages.

    Raises:
        ValueError: a segment has a category missing from ``id_map`` or a duplicate/zero id,
            or the PNG holds a non-zero segment id that ``segments_info`` does not list.
    """
    pan = _rgb2id(panoptic_rgb)
    lut_ids, lut_values = [0], [IGNORE_LABEL]
    for seg in segments_info:
        if seg["category_id"] not in id_map:
            raise ValueError(
                f"{where}: segment {seg['id']} has unknown category_id {seg['category_id']} "
                f"(expected one of the {len(id_map)} COCO panoptic category ids)"
            )
        if seg["id"] in lut_ids:  # 0 is reserved for unlabeled pixels
            raise ValueError(f"{where}: segment id {seg['id']} is 0 or listed twice")
        lut_ids.append(seg["id"])
        lut_values.append(id_map[seg["category_id"]])
    order = np.argsort(lut_ids)
    lut_ids = np.asarray(lut_ids, np.uint32)[order]
    lut_values = np.asarray(lut_values, np.uint8)[order]
    pos = np.clip(np.searchsorted(lut_ids, pan), 0, len(lut_ids) - 1)
    known = lut_ids[pos] == pan
    if not known.all():
        missing = sorted(int(i) for i in np.unique(pan[~known]))
        raise ValueError(
            f"{where}: segment ids {missing[:10]} are in the PNG but not in segments_info"
        )
    return lut_values[pos]


def _convert_one(panoptic_path, output_path, segments_info, id_map, where):
    if not os.path.isfile(panoptic_path):
        raise FileNotFoundError(f"panoptic PNG not found: {panoptic_path} (listed in {where})")
    with Image.open(panoptic_path) as im:
        if im.mode != "RGB":
            raise ValueError(f"{panoptic_path}: expected an RGB panoptic PNG, got mode {im.mode}")
        rgb = np.asarray(im)
    semantic = panoptic_to_semantic(rgb, segments_info, id_map, where=panoptic_path)
    save_image_atomic(output_path, Image.fromarray(semantic))


def _annotations(panoptic_json):
    if not os.path.isfile(panoptic_json):
        raise FileNotFoundError(f"panoptic json not found: {panoptic_json}")
    with open(panoptic_json, encoding="utf-8") as f:
        data = json.load(f)
    if "annotations" not in data:
        raise ValueError(f"{panoptic_json}: no 'annotations' key; not a COCO panoptic json")
    for i, ann in enumerate(data["annotations"]):
        for key in ("file_name", "segments_info"):
            if key not in ann:
                raise ValueError(f"{panoptic_json}: annotations[{i}] has no '{key}'")
    return data["annotations"]


def convert_panoptic_json(panoptic_json, panoptic_root, output_dir, *, categories=None, workers=1):
    """Write ``output_dir/<file_name>`` for every annotation of ``panoptic_json``.

    Args:
        panoptic_json: e.g. ``coco/annotations/panoptic_val2017.json``.
        panoptic_root: folder of its PNGs, e.g. ``coco/panoptic_val2017``.
        output_dir: e.g. ``coco/panoptic_stuff_val2017``; created if needed. Each file is
            written atomically, so an interrupted run leaves no truncated PNG.
        categories: see ``semantic_id_map``.
        workers: processes to use (1: convert in this process).

    Returns:
        The number of PNGs written.
    """
    annotations = _annotations(os.fspath(panoptic_json))
    if not os.path.isdir(panoptic_root):
        raise FileNotFoundError(f"panoptic PNG folder not found: {panoptic_root}")
    os.makedirs(output_dir, exist_ok=True)
    id_map = semantic_id_map(categories)
    jobs = [
        (
            os.path.join(panoptic_root, ann["file_name"]),
            os.path.join(output_dir, ann["file_name"]),
            ann["segments_info"],
        )
        for ann in annotations
    ]
    convert = functools.partial(_convert_one, id_map=id_map, where=os.fspath(panoptic_json))
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.Pool(min(workers, len(jobs))) as pool:
            pool.starmap(convert, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    else:
        for job in jobs:
            convert(*job)
    return len(jobs)


def convert_coco_root(coco_root, splits=SPLITS, *, workers=1):
    """Convert ``coco_root/annotations/panoptic_{split}.json`` for each split, laid out as
    Detectron2's builtin ``coco_2017_*_panoptic_separated`` datasets expect.

    Returns:
        {split: number of PNGs written}.
    """
    done = {}
    for split in splits:
        done[split] = convert_panoptic_json(
            os.path.join(coco_root, "annotations", f"panoptic_{split}.json"),
            os.path.join(coco_root, f"panoptic_{split}"),
            os.path.join(coco_root, f"panoptic_stuff_{split}"),
            workers=workers,
        )
    return done
