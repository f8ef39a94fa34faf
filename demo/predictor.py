"""Predictions drawn with Detectron2's visualizers, as Detectron2's ``demo/predictor.py``:
panoptic segmentation when the model outputs it (Panoptic FPN), else semantic segmentation
(SemanticSegmentor with the RSP head, :func:`draw_sem_seg`), plus instances if there are any."""
import glob
import os
from typing import Dict, Iterator, List, Sequence, Tuple

import cv2
import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import _LARGE_MASK_AREA_THRESH, ColorMode, VisImage, Visualizer

from rsp_d2.engine.predictor import Predictor
from rsp_d2.utils.errors import InputError
from rsp_d2.visualization.overlays import with_stuff_colors

__all__ = ["SegmentationDemo", "demo_metadata", "draw_sem_seg", "expand_inputs", "output_paths",
           "IMAGE_EXTENSIONS"]

# Pixels blended per step of draw_sem_seg (float32 temporaries of a few tens of MB).
_BLEND_PIXELS = 1 << 21


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
            predictor: an already built one (tests), called as ``predictor(image_bgr,
                logits=False)``; by default ``Predictor(cfg)``.
        """
        self.metadata = demo_metadata(cfg)
        self.instance_mode = instance_mode
        self.cpu = torch.device("cpu")
        self.predictor = predictor if predictor is not None else Predictor(cfg)

    def draw(self, image_rgb: np.ndarray, predictions: Dict) -> VisImage:
        """Draw `predictions` (the model's outputs for this image, "sem_seg" as logits or
        "sem_seg_labels") over it."""
        if "panoptic_seg" in predictions:
            seg, segments_info = predictions["panoptic_seg"]
            return self._draw_panoptic(image_rgb, seg.to(self.cpu), segments_info)
        labels = _labels(predictions)
        if labels is not None:
            visualizer = draw_sem_seg(image_rgb, labels.to(self.cpu), self.metadata,
                                      instance_mode=self.instance_mode)
        else:
            visualizer = Visualizer(image_rgb, self.metadata, instance_mode=self.instance_mode)
        out = visualizer.output
        if "instances" in predictions:
            out = visualizer.draw_instance_predictions(predictions["instances"].to(self.cpu))
        return out

    def _draw_panoptic(self, image_rgb: np.ndarray, seg: torch.Tensor, segments_info) -> VisImage:
        width = image_rgb.shape[1]
        if width != 2:
            return Visualizer(image_rgb, self.metadata, instance_mode=self.instance_mode
                              ).draw_panoptic_seg(seg, segments_info)
        # Detectron2's GenericMask takes an (H, 2) mask for a polygon list and asserts: draw
        # one column wider (an id of no segment, so nothing is drawn there) and crop it off.
        unused = max([s["id"] for s in segments_info] + [int(seg.max())]) + 1
        seg = torch.cat([seg, torch.full_like(seg[:, :1], unused)], dim=1)
        image_rgb = np.concatenate([image_rgb, image_rgb[:, -1:]], axis=1)
        drawn = Visualizer(image_rgb, self.metadata, instance_mode=self.instance_mode
                           ).draw_panoptic_seg(seg, segments_info).get_image()
        return VisImage(np.ascontiguousarray(drawn[:, :width]))

    def run_on_image(self, image_bgr: np.ndarray) -> Tuple[Dict, VisImage]:
        """
        Args:
            image_bgr: (H, W, 3) uint8, as ``cv2.imread`` gives.

        Returns:
            the model's predictions (semantic ones as "sem_seg_labels" (H, W): see
            ``Predictor.__call__(logits=False)``) and the drawing at the image's size.
        """
        predictions = self.predictor(image_bgr, logits=False)
        return predictions, self.draw(image_bgr[:, :, ::-1], predictions)

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """Yield each frame (BGR) with its predictions drawn, via Detectron2's
        ``VideoVisualizer`` (instance colours kept across frames)."""
        visualizer = VideoVisualizer(self.metadata, self.instance_mode)
        while video.isOpened():
            ok, frame = video.read()
            if not ok:
                break
            predictions = self.predictor(frame, logits=False)
            rgb = frame[:, :, ::-1]
            labels = _labels(predictions)
            if "panoptic_seg" in predictions:
                seg, segments_info = predictions["panoptic_seg"]
                vis = visualizer.draw_panoptic_seg_predictions(rgb, seg.to(self.cpu), segments_info)
            elif labels is not None:
                vis = draw_sem_seg(rgb, labels.to(self.cpu), self.metadata).output
            else:
                vis = visualizer.draw_instance_predictions(rgb, predictions["instances"].to(self.cpu))
            yield cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)


def _labels(predictions: Dict):
    """(H, W) class ids of the semantic predictions, or None."""
    if "sem_seg_labels" in predictions:
        return predictions["sem_seg_labels"]
    if "sem_seg" in predictions:
        return predictions["sem_seg"].argmax(dim=0)
    return None


def draw_sem_seg(image_rgb: np.ndarray, labels, metadata, alpha: float = 0.8,
                 instance_mode=ColorMode.IMAGE) -> Visualizer:
    """A Visualizer over `image_rgb` with the classes of `labels` drawn, as
    ``Visualizer.draw_sem_seg`` draws them: each class blended in its ``stuff_colors`` with
    opacity `alpha`, its name on its largest connected component and on components of more
    than 120000 pixels (at their median pixel), larger classes first.

    Detectron2 draws each class as a matplotlib layer (an (H, W, 4) float32 image per class
    with holes: 384 MB at 24 megapixels) and places names via ``nonzero`` of each component;
    here the classes are blended into the image in one pass, and the medians come from pixel
    counts per row and column. Class boundaries get no outline (Detectron2 outlines the
    classes without holes only).

    Args:
        image_rgb: (H, W, 3) uint8.
        labels: (H, W) integer class ids (tensor or array); ids outside 0 ..
            len(stuff_classes) - 1 are not drawn.
        metadata: with ``stuff_classes`` and ``stuff_colors``.

    Returns:
        the Visualizer, whose ``output`` is the drawing (draw instances on it next).
    """
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    classes, colors = metadata.stuff_classes, np.asarray(metadata.stuff_colors, dtype=np.float32)
    k = len(classes)
    # Per id: out = image * keep + add; id k (labels outside 0..k-1) keeps the image as it is.
    keep = np.append(np.full(k, 1.0 - alpha, dtype=np.float32), np.float32(1.0))
    add = np.concatenate([colors * alpha, np.zeros((1, 3), dtype=np.float32)])
    flat, pixels = labels.reshape(-1), image_rgb.reshape(-1, 3)
    blended = np.empty_like(pixels, dtype=np.uint8)
    areas = np.zeros(k + 1, dtype=np.int64)
    for i in range(0, len(flat), _BLEND_PIXELS):  # in steps: no image-sized temporaries
        ids = flat[i:i + _BLEND_PIXELS]
        ids = np.where((ids >= 0) & (ids < k), ids, k)
        areas += np.bincount(ids, minlength=k + 1)
        blended[i:i + _BLEND_PIXELS] = np.rint(pixels[i:i + _BLEND_PIXELS] * keep[ids, None] + add[ids])
    areas = areas[:k]
    visualizer = Visualizer(blended.reshape(image_rgb.shape), metadata, instance_mode=instance_mode)
    for label in np.argsort(-areas, kind="stable"):
        if areas[label] == 0:
            break
        text_color = visualizer._change_color_brightness(colors[label] / 255, brightness_factor=0.7)
        for center in _text_positions(labels == label):
            visualizer.draw_text(classes[label], center, color=text_color)
    return visualizer


def _text_positions(mask: np.ndarray) -> List[Tuple[float, float]]:
    """(x, y) where Detectron2's ``Visualizer._draw_text_in_mask`` writes a class name: the
    median pixel (per axis) of the largest 8-connected component of `mask` (H, W) bool, and of
    every component of more than _LARGE_MASK_AREA_THRESH pixels."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), 8)
    if count < 2:
        return []
    largest = int(np.argmax(stats[1:, cv2.CC_STAT_AREA])) + 1
    positions = []
    for cid in range(1, count):
        if cid != largest and stats[cid, cv2.CC_STAT_AREA] <= _LARGE_MASK_AREA_THRESH:
            continue
        x, y, w, h = stats[cid, :4]
        inside = components[y:y + h, x:x + w] == cid
        positions.append((x + _median_index(inside.sum(axis=0)),
                          y + _median_index(inside.sum(axis=1))))
    return positions


def _median_index(counts: np.ndarray) -> float:
    """np.median of the indices i, each repeated counts[i] times."""
    total = np.cumsum(counts)
    n = int(total[-1])
    lower, upper = np.searchsorted(total, [(n - 1) // 2, n // 2], side="right")
    return (lower + upper) / 2


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
