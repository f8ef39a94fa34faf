"""The pieces of ``tools/run_demo.py``: a results table and prediction overlays."""
import math
import os
from typing import Dict, List, Sequence

import numpy as np
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.data import detection_utils as utils
from detectron2.modeling import build_model
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

from ..data.mapper import build_mapper
from .checkpoint import AtomicDetectionCheckpointer

__all__ = ["format_semantic_results", "save_overlays"]


def _fmt(value) -> str:
    return "    -" if value is None or math.isnan(value) else f"{value:5.1f}"


def format_semantic_results(results: Dict, class_names: Sequence[str]) -> str:
    """A text table of per-class IoU (%) from both Cityscapes evaluators.

    Args:
        results: ``RSPTrainer.test`` output, with "cityscapes_sem_seg" (official
            cityscapesscripts) and "sem_seg" (Detectron2's SemSegEvaluator).
        class_names: the classes, in train-id order.

    "-" marks a class left out of that evaluator's mean: the official script leaves out a
    class with neither ground truth nor predictions (predicted but absent scores 0),
    SemSegEvaluator every class without ground truth.
    """
    official, d2 = results["cityscapes_sem_seg"], results["sem_seg"]
    width = max(len(n) for n in class_names) + 2
    lines = [f"{'class':<{width}} official IoU   SemSegEvaluator IoU",
             "-" * (width + 35)]
    for name in class_names:
        lines.append(f"{name:<{width}} {_fmt(official.get(f'IoU-{name}'))}          "
                     f"{_fmt(d2.get(f'IoU-{name}'))}")
    lines += ["-" * (width + 35),
              f"{'mean (mIoU)':<{width}} {_fmt(official['IoU'])}          {_fmt(d2['mIoU'])}",
              f"official: iIoU {official['iIoU']:.1f}, category IoU {official['IoU_sup']:.1f}, "
              f"category iIoU {official['iIoU_sup']:.1f}; SemSegEvaluator: fwIoU "
              f"{d2['fwIoU']:.1f}, mACC {d2['mACC']:.1f}, pACC {d2['pACC']:.1f}",
              "(-: not in that mean. Official: no ground truth and never predicted; "
              "SemSegEvaluator: no ground truth.)"]
    return "\n".join(lines)


def _metadata_with_colors(dataset_name: str) -> Metadata:
    """The dataset's metadata, with fixed class colours: without ``stuff_colors`` (Detectron2's
    Cityscapes has none) the Visualizer would draw each class in a new random colour per panel,
    so ground truth and prediction would not match."""
    meta = MetadataCatalog.get(dataset_name)
    if meta.get("stuff_colors"):
        return meta
    if meta.get("evaluator_type") == "cityscapes_sem_seg":
        from cityscapesscripts.helpers.labels import trainId2label

        colors = [list(trainId2label[i].color) for i in range(len(meta.stuff_classes))]
    else:
        palette = colormap(rgb=True, maximum=255).astype(int).tolist()
        colors = [palette[i % len(palette)] for i in range(len(meta.stuff_classes))]
    return Metadata(name=dataset_name, stuff_classes=meta.stuff_classes, stuff_colors=colors)


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
    metadata = _metadata_with_colors(dataset_name)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for record in DatasetCatalog.get(dataset_name)[:num_images]:
        prediction = model([mapper(record)])[0]["sem_seg"].argmax(dim=0).cpu().numpy()
        image = utils.read_image(record["file_name"], format="RGB")
        ground_truth = utils.read_image(record["sem_seg_file_name"])
        panels = [_panel(image, metadata, "image"),
                  _panel(image, metadata, "ground truth", ground_truth),
                  _panel(image, metadata, "prediction", prediction)]
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        path = os.path.join(output_dir, f"{stem}_overlay.png")
        Image.fromarray(np.concatenate(panels, axis=1)).save(path)
        paths.append(path)
    return paths
