"""Panoptic FPN deployed whole: both branches in one traced graph, the panoptic combination
after it.

Detectron2's ``export_model.py`` exports a Panoptic FPN's instance branch only (its
``GeneralizedRCNN`` path), and :class:`SemanticSegmentationAdapter` its semantic branch only.
:class:`PanopticFPNAdapter` traces ``PanopticFPN.inference(..., do_postprocess=False)``: the
normalization and padding, the backbone, the RPN (anchors, top-k, NMS), the box head (ROIAlign,
per-class NMS, the top detections), the mask head on the detections and the semantic head, in
one graph with dynamic height, width and number of detections.

Outside the graph, in :func:`panoptic_from_outputs` (Detectron2's own functions, as
``PanopticFPN.inference`` calls them): pasting each mask into the image and rescaling to the
output size (``detector_postprocess``, ``sem_seg_postprocess``), and the panoptic combination
(``combine_semantic_and_instance_outputs``: a loop over the instances by score with
data-dependent overlap and area tests, which a trace would freeze to the traced image's
instances).
"""
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from detectron2.modeling.meta_arch.panoptic_fpn import (PanopticFPN,
                                                        combine_semantic_and_instance_outputs)
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import Boxes, Instances

__all__ = ["PanopticFPNAdapter", "CombineSettings", "panoptic_from_outputs",
           "compare_panoptic_outputs"]


class PanopticFPNAdapter(nn.Module):
    """``adapter(image) -> (boxes, scores, classes, mask_probs, sem_seg)`` of a ``PanopticFPN``.

    Input: (1, 3, H, W) or (3, H, W) float32, pixel values 0-255 in ``INPUT.FORMAT`` order,
    resized to the network input size (as :class:`SemanticSegmentationAdapter`'s).

    Outputs, for R detections: boxes (R, 4) float32 (x0, y0, x1, y1) in input pixels; scores
    (R,) float32; classes (R,) int64 (contiguous thing ids); mask_probs (R, 1, M, M) float32,
    the mask head's probabilities before pasting; sem_seg (1, K, H, W) float32 logits of the
    semantic head, cropped to the input. R is at most ``TEST.DETECTIONS_PER_IMAGE``.
    """

    OUTPUT_NAMES = ("boxes", "scores", "classes", "mask_probs", "sem_seg")

    def __init__(self, model: nn.Module):
        super().__init__()
        if not isinstance(model, PanopticFPN):
            raise ValueError(f"PanopticFPNAdapter: expected a PanopticFPN, got {type(model).__name__}")
        self.model = model
        self.size_divisibility = max(1, int(model.backbone.size_divisibility))

    def forward(self, image: torch.Tensor):
        if image.dim() == 4:
            if image.shape[0] != 1:
                raise ValueError(f"PanopticFPNAdapter: one image at a time, got {tuple(image.shape)}")
            image = image[0]
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"PanopticFPNAdapter: image must be (3, H, W) or (1, 3, H, W), got "
                             f"{tuple(image.shape)}")
        instances, sem_seg = self.model.inference([{"image": image}], do_postprocess=False)
        found = instances[0]
        h, w = image.shape[1], image.shape[2]  # traced values while tracing: dynamic
        return (found.pred_boxes.tensor, found.scores, found.pred_classes, found.pred_masks,
                sem_seg[:, :, :h, :w])


@dataclass(frozen=True)
class CombineSettings:
    """The thresholds of the panoptic combination (``MODEL.PANOPTIC_FPN.COMBINE``)."""

    overlap_threshold: float = 0.5
    stuff_area_threshold: int = 4096
    instances_score_threshold: float = 0.5

    @classmethod
    def from_config(cls, cfg) -> "CombineSettings":
        c = cfg.MODEL.PANOPTIC_FPN.COMBINE
        return cls(c.OVERLAP_THRESH, c.STUFF_AREA_LIMIT, c.INSTANCES_CONFIDENCE_THRESH)


def panoptic_from_outputs(outputs: Sequence, settings: CombineSettings,
                          height: Optional[int] = None, width: Optional[int] = None) -> Dict:
    """What ``PanopticFPN`` returns for one image, from the exported graph's `outputs` (numpy
    arrays or tensors, in :attr:`PanopticFPNAdapter.OUTPUT_NAMES` order), at the output size
    `height` x `width` (default: the input's).

    Returns:
        {"sem_seg": (K, height, width) logits, "instances": Instances with pasted
        ``pred_masks`` (R, height, width) bool, "panoptic_seg": ((height, width) int32 segment
        ids, segments_info)}, as Detectron2's ``PanopticFPN.inference``.
    """
    boxes, scores, classes, mask_probs, sem_seg = (torch.as_tensor(np.asarray(o)) for o in outputs)
    image_size = tuple(sem_seg.shape[-2:])
    height, width = height or image_size[0], width or image_size[1]
    found = Instances(image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes,
                      pred_masks=mask_probs)
    semantic = sem_seg_postprocess(sem_seg[0], image_size, height, width)
    detections = detector_postprocess(found, height, width)
    panoptic = combine_semantic_and_instance_outputs(
        detections, semantic.argmax(dim=0), settings.overlap_threshold,
        settings.stuff_area_threshold, settings.instances_score_threshold)
    return {"sem_seg": semantic, "instances": detections, "panoptic_seg": panoptic}


def compare_panoptic_outputs(reference: Sequence, exported: Sequence,
                             settings: CombineSettings) -> Dict[str, float]:
    """How far an exported Panoptic FPN's outputs are from PyTorch's (both in
    :attr:`PanopticFPNAdapter.OUTPUT_NAMES` order).

    Returns:
        detections: R of the reference; same_detections: 1.0 when both have the same number of
        detections with the same classes; boxes_max_abs, scores_max_abs, masks_max_abs: max
        |difference| (inf when the detections differ); sem_seg_rel_to_range: max |logit
        difference| / the reference logits' range; panoptic_agreement: fraction of pixels with
        the same segment id, both combined by :func:`panoptic_from_outputs`; same_segments: 1.0
        when both list the same segments (id, category, thing or stuff).
    """
    ref = [np.asarray(r.detach().cpu() if isinstance(r, torch.Tensor) else r) for r in reference]
    out = [np.asarray(o.detach().cpu() if isinstance(o, torch.Tensor) else o) for o in exported]
    same = ref[0].shape == out[0].shape and bool((ref[2] == out[2]).all())
    diff = {name: float(np.abs(r.astype(np.float64) - o).max()) if same and r.size else
            (0.0 if same else float("inf"))
            for name, r, o in zip(("boxes", "scores", "masks"), (ref[0], ref[1], ref[3]),
                                  (out[0], out[1], out[3]))}
    logits = ref[4].astype(np.float64)
    span = float(logits.max() - logits.min()) or 1.0
    pan_ref = panoptic_from_outputs(ref, settings)["panoptic_seg"]
    pan_out = panoptic_from_outputs(out, settings)["panoptic_seg"]

    def segments(info):
        return sorted((s["id"], s["category_id"], s["isthing"]) for s in info)

    return {
        "detections": float(ref[0].shape[0]),
        "same_detections": float(same),
        "boxes_max_abs": diff["boxes"],
        "scores_max_abs": diff["scores"],
        "masks_max_abs": diff["masks"],
        "sem_seg_rel_to_range": float(np.abs(logits - out[4]).max()) / span,
        "panoptic_agreement": float((pan_ref[0] == pan_out[0]).double().mean()),
        "same_segments": float(segments(pan_ref[1]) == segments(pan_out[1])),
    }
