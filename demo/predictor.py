"""Predictions drawn with Detectron2's visualizers, as Detectron2's ``demo/predictor.py``:
panoptic segmentation when the model outputs it (Panoptic FPN), else semantic segmentation
(SemanticSegmentor with the RSP head), plus instances if there are any."""
import glob
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer

from rsp_d2.engine.predictor import Predictor
from rsp_d2.utils.errors import InputError
from rsp_d2.visualization.overlays import with_stuff_colors

__all__ = ["SegmentationDemo", "demo_metadata", "expand_inputs", "output_paths", "IMAGE_EXTENSIONS"]


def demo_metadata(cfg) -> Metadata:
    """The first test dataset's metadata (class names, colours), generic "class i" names when
    it has none, so that any config can be drawn.

    Fixed colours are added (on a copy, :func:`rsp_d2.visualization.overlays.with_stuff_colors`)
    so that drawings compare across images and runs.
    """
    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
    if meta is None or not (meta.get("stuff_classes") or meta.get("thing_classes")):
        k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        return with_stuff_colors({"name": "rsp_demo",
                                  "stuff_classes": [f"class {i}" for i in range(k)]})
    return with_stuff_colors(dict(meta.as_dict(), name=meta.name + "_demo"))


class SegmentationDemo:
    """``run_on_image(bgr) -> (predictions, VisImage)`` and ``run_on_video(capture)``."""

    def __init__(self, cfg, instance_mode=ColorMode.IMAGE, *, predictor: Predictor = None):
        """
        Args:
            cfg: a frozen config whose MODEL.WEIGHTS is the checkpoint to draw.
            predictor: an already built one (tests); by default ``Predictor(cfg)``.
        """
        self.metadata = demo_metadata(cfg)
        self.instance_mode = instance_mode
        self.cpu = torch.device("cpu")
        self.predictor = predictor if predictor is not None else Predictor(cfg)

    def draw(self, image_rgb: np.ndarray, predictions: Dict) -> VisImage:
        """Draw `predictions` (the model's outputs for this image) over it."""
        visualizer = Visualizer(image_rgb, self.metadata, instance_mode=self.instance_mode)
        if "panoptic_seg" in predictions:
            seg, segments_info = predictions["panoptic_seg"]
            return visualizer.draw_panoptic_seg(seg.to(self.cpu), segments_info)
        out = visualizer.output
        if "sem_seg" in predictions:
            out = visualizer.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to(self.cpu))
        if "instances" in predictions:
            out = visualizer.draw_instance_predictions(predictions["instances"].to(self.cpu))
        return out

    def run_on_image(self, image_bgr: np.ndarray) -> Tuple[Dict, VisImage]:
        """
        Args:
            image_bgr: (H, W, 3) uint8, as ``cv2.imread`` gives.

        Returns:
            the model's predictions and the drawing at the image's size.
        """
        predictions = self.predictor(image_bgr)
        return predictions, self.draw(image_bgr[:, :, ::-1], predictions)

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """Yield each frame (BGR) with its predictions drawn, via Detectron2's
        ``VideoVisualizer`` (instance colours kept across frames)."""
        visualizer = VideoVisualizer(self.metadata, self.instance_mode)
        while video.isOpened():
            ok, frame = video.read()
            if not ok:
                break
            predictions = self.predictor(frame)
            rgb = frame[:, :, ::-1]
            if "panoptic_seg" in predictions:
                seg, segments_info = predictions["panoptic_seg"]
                vis = visualizer.draw_panoptic_seg_predictions(rgb, seg.to(self.cpu), segments_info)
            elif "sem_seg" in predictions:
                vis = visualizer.draw_sem_seg(rgb, predictions["sem_seg"].argmax(dim=0).to(self.cpu))
            else:
                vis = visualizer.draw_instance_predictions(rgb, predictions["instances"].to(self.cpu))
            yield cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SAVE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def expand_inputs(items: Sequence[str]) -> List[Tuple[str, str]]:
    """--input items (files, glob patterns, folders searched recursively for images) ->
    [(path, name to write it under)], in order, without duplicates."""
    out, seen = [], set()
    for item in items:
        if os.path.isdir(item):
            found = sorted(os.path.join(d, f) for d, _, files in os.walk(item) for f in files
                           if f.lower().endswith(IMAGE_EXTENSIONS))
            pairs = [(p, os.path.relpath(p, item)) for p in found]
            if not pairs:
                raise InputError(f"--input {item}: folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        elif glob.has_magic(item):
            pairs = [(p, os.path.basename(p)) for p in sorted(glob.glob(os.path.expanduser(item)))
                     if os.path.isfile(p)]
            if not pairs:
                raise InputError(f"--input {item}: the pattern matches no file")
        elif os.path.isfile(item):
            pairs = [(item, os.path.basename(item))]
        else:
            raise InputError(f"--input {item}: image not found")
        for path, name in pairs:
            if os.path.abspath(path) not in seen:
                seen.add(os.path.abspath(path))
                out.append((path, name))
    return out


def output_paths(inputs: Sequence[Tuple[str, str]], output: str) -> List[str]:
    """Where each drawing goes: `output` itself for one input whose `output` names an image
    file; otherwise `output` is a folder and each drawing keeps its input's name (its relative
    path for folder inputs; .png unless the input is .png/.jpg/.jpeg)."""
    is_file = (len(inputs) == 1 and not os.path.isdir(output)
               and output.lower().endswith(_SAVE_EXTENSIONS))
    if is_file:
        return [output]
    if os.path.isfile(output):
        raise InputError(f"--output {output} is a file, but {len(inputs)} inputs need a folder")
    paths = []
    for _, name in inputs:
        stem, ext = os.path.splitext(name)
        paths.append(os.path.join(output, name if ext.lower() in _SAVE_EXTENSIONS else stem + ".png"))
    dupes = sorted({p for p in paths if paths.count(p) > 1})
    if dupes:
        raise InputError(f"several inputs would be written to {dupes[0]}: give them distinct "
                         "names or one folder as --input")
    return paths
