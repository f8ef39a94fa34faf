"""Panoptic FPN deployed whole: both branches in one traced graph, the panoptic combination
after it.

Detectron2's ``export_model.py`` exports a Panoptic FPN's instance branch only (its
``GeneralizedRCNN`` path), and :class:`SemanticSegmentationAdapter` its semantic branch only.
:class:`PanopticFPNAdapter` traces what ``PanopticFPN.inference(..., do_postprocess=False)``
computes for one image: the normalization and padding, the backbone, the semantic head, the RPN
(anchors, top-k, NMS), the box head (ROIAlign, per-class NMS, the top detections) and the mask
head on the detections, in one graph whose height, width, number of proposals and number of
detections are all dynamic. The ROI heads are called part by part (Detectron2's box pooler,
box head, box predictor, ``fast_rcnn_inference_single_image``, mask pooler and mask head
layers) because their list-of-images methods split the batch by ``len(instances)``, a Python
int that a trace records as a constant: a graph traced through them fails on any image with
another number of proposals or detections.

Outside the graph, in :func:`panoptic_from_outputs` (Detectron2's own functions, as
``PanopticFPN.inference`` calls them): pasting each mask into the image and rescaling to the
output size (``detector_postprocess``, ``sem_seg_postprocess``), and the panoptic combination
(``combine_semantic_and_instance_outputs``: a loop over the instances by score with
data-dependent overlap and area tests, which a trace would freeze to the traced image's
instances).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.modeling.meta_arch.panoptic_fpn import (PanopticFPN,
                                                        combine_semantic_and_instance_outputs)
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image
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
        heads = model.roi_heads
        if type(heads) is not StandardROIHeads or not heads.mask_on or heads.keypoint_on:
            raise ValueError("PanopticFPNAdapter: expected Detectron2's StandardROIHeads with a mask "
                             f"head and no keypoint head (Panoptic FPN's), got {type(heads).__name__}")
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
        model = self.model
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        sem_seg, _ = model.sem_seg_head(features, None)
        proposals, _ = model.proposal_generator(images, features, None)
        boxes, scores, classes, mask_probs = self._detect(features, proposals[0],
                                                          images.image_sizes[0])
        h, w = image.shape[1], image.shape[2]  # traced values while tracing: dynamic
        return boxes, scores, classes, mask_probs, sem_seg[:, :, :h, :w]

    def _detect(self, features, proposals: Instances, image_size):
        """StandardROIHeads' inference for one image, without its per-image splits."""
        heads = self.model.roi_heads
        predictor = heads.box_predictor
        proposal_boxes = proposals.proposal_boxes
        x = heads.box_pooler([features[f] for f in heads.box_in_features], [proposal_boxes])
        logits, deltas = predictor(heads.box_head(x))
        boxes = predictor.box2box_transform.apply_deltas(deltas, proposal_boxes.tensor)
        probs = logits.sigmoid() if predictor.use_sigmoid_ce else F.softmax(logits, dim=-1)
        found, _ = fast_rcnn_inference_single_image(
            boxes, probs, image_size, predictor.test_score_thresh, predictor.test_nms_thresh,
            predictor.test_topk_per_image)
        x = heads.mask_pooler([features[f] for f in heads.mask_in_features], [found.pred_boxes])
        mask_logits = heads.mask_head.layers(x)  # (R, classes or 1, M, M)
        if mask_logits.shape[1] > 1:  # one mask per class: the detected class's
            index = torch.arange(mask_logits.shape[0], device=mask_logits.device)
            mask_logits = mask_logits[index, found.pred_classes]
        else:
            mask_logits = mask_logits[:, 0]
        return (found.pred_boxes.tensor, found.scores, found.pred_classes,
                mask_logits[:, None].sigmoid())


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


def _canonical(outputs: Sequence) -> List[np.ndarray]:
    """`outputs` as numpy, the detections in one order: by score (descending), class, box.
    Runtimes break ties in scores (equal proposals, clipped boxes) in their own order; the
    combination, which takes the instances by score, then sees the same order from both."""
    arrays = [np.asarray(o.detach().cpu() if isinstance(o, torch.Tensor) else o) for o in outputs]
    boxes, scores, classes = arrays[0], arrays[1], arrays[2]
    order = np.lexsort(tuple(boxes.T[::-1]) + (classes, -scores))
    return [a[order] for a in arrays[:4]] + arrays[4:]


def compare_panoptic_outputs(reference: Sequence, exported: Sequence,
                             settings: CombineSettings) -> Dict[str, float]:
    """How far an exported Panoptic FPN's outputs are from PyTorch's (both in
    :attr:`PanopticFPNAdapter.OUTPUT_NAMES` order), the detections of both in one order
    (by score, class, box: ties may come in another order from each runtime).

    Returns:
        detections: R of the reference; same_detections: 1.0 when both have the same number of
        detections with the same classes; boxes_max_abs, scores_max_abs, masks_max_abs: max
        |difference| (inf when the detections differ); sem_seg_rel_to_range: max |logit
        difference| / the reference logits' range; panoptic_agreement: fraction of pixels with
        the same segment id, both combined by :func:`panoptic_from_outputs`; same_segments: 1.0
        when both list the same segments (id, category, thing or stuff).
    """
    ref, out = _canonical(reference), _canonical(exported)
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
