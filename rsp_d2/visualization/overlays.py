"""Predictions drawn over their images: class colours that stay fixed across images, and the
image | ground truth | prediction overlays of a trained model on a dataset."""
import os
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

from ..data.image_io import read_image
from ..data.mapper import build_mapper
from ..engine.checkpoint import AtomicDetectionCheckpointer
from ..utils.file_io import save_image_atomic

__all__ = ["stuff_colors", "with_stuff_colors", "save_overlays"]


def stuff_colors(names: Sequence[str]) -> List[Tuple[int, int, int]]:
    """Cityscapes' official colour for Cityscapes class names, Detectron2's palette otherwise."""
    try:
        from cityscapesscripts.helpers.labels import name2label
    except ImportError:
        name2label = {}
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    return [tuple(name2label[n].color) if n in name2label else tuple(palette[i % len(palette)])
            for i, n in enumerate(names)]


def with_stuff_colors(fields: dict) -> Metadata:
    """Metadata from `fields` (a ``Metadata.as_dict()``), with fixed ``stuff_colors`` added when
    it has stuff classes but no colours.

    Detectron2's builtin Cityscapes metadata has no ``stuff_colors``, and its Visualizer then
    draws each class in a new random colour per call, so ground truth and prediction, or two
    images, would not match.
    """
    fields = dict(fields)
    if fields.get("stuff_classes") and not fields.get("stuff_colors"):
        fields["stuff_colors"] = stuff_colors(fields["stuff_classes"])
    return Metadata(**fields)


def _panel(image_rgb: np.ndarray, metadata, title: str, sem_seg=None) -> np.ndarray:
    vis = Visualizer(image_rgb, metadata)
    if sem_seg is not None:
        vis.draw_sem_seg(sem_seg, alpha=0.6)
    vis.draw_text(title, (6, 4), horizontal_alignment="left", font_size=12)
    return vis.output.get_image()


@torch.no_grad()
def save_overlays(cfg, weights: str, dataset_name: str, output_dir: str,
                  num_images: int = 4) -> List[str]:
    """Write ``<image>_overlay.png`` (image | ground truth | prediction) for the first
    `num_images` records of `dataset_name`, predicted by the model of `cfg` with `weights`.

    Returns:
        the written paths.
    """
    model = build_model(cfg)  # not RSPTrainer.build_model: it logs the whole model again
    AtomicDetectionCheckpointer(model).load(weights)
    model.eval()
    mapper = build_mapper(cfg, is_train=False)
    metadata = with_stuff_colors(MetadataCatalog.get(dataset_name).as_dict())
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for record in DatasetCatalog.get(dataset_name)[:num_images]:
        prediction = model([mapper(record)])[0]["sem_seg"].argmax(dim=0).cpu().numpy()
        image = read_image(record["file_name"], format="RGB")
        ground_truth = utils.read_image(record["sem_seg_file_name"])
        panels = [_panel(image, metadata, "image"),
                  _panel(image, metadata, "ground truth", ground_truth),
                  _panel(image, metadata, "prediction", prediction)]
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        path = os.path.join(output_dir, f"{stem}_overlay.png")
        save_image_atomic(path, Image.fromarray(np.concatenate(panels, axis=1)))
        paths.append(path)
    return paths
