"""Semantic segmentation with the RSP head: Detectron2's SemanticSegmentor on the R50-FPN and
RSP head of ``rsp_panoptic_fpn.py`` (RSP-2 on P2-P5, kernel 7), for the 19 Cityscapes classes.

The LazyConfig form of configs/cityscapes/rsp2_R50.yaml's model (META_ARCHITECTURE
"SemanticSegmentor", MODEL.BACKBONE.NAME "build_resnet_fpn_backbone", FrozenBN).
"""
from detectron2.config import LazyCall as L
from detectron2.modeling import SemanticSegmentor

from .rsp_panoptic_fpn import model as _panoptic

model = L(SemanticSegmentor)(
    backbone=_panoptic.backbone,
    sem_seg_head=_panoptic.sem_seg_head,
    pixel_mean=_panoptic.pixel_mean,
    pixel_std=_panoptic.pixel_std,
)
model.sem_seg_head.num_classes = 19
model.sem_seg_head.loss_weight = 1.0  # the only loss (Panoptic FPN's lambda_s is 0.5)
