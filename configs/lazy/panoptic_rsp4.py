# Table III "RSP-4-D head": Panoptic FPN on P2-P7 with the RSP-4 head, kernel 3 dilation 3
# (configs/panoptic_rsp4.yaml). The RPN keeps reading p2-p6 (p6 now the strided conv's, as in
# the yaml config) and the ROI heads p2-p5.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from rsp_d2.modeling import FPNP2P7

from .panoptic_rsp2 import dataloader, lr_multiplier, model, optimizer, train

model.backbone._target_ = FPNP2P7
model.backbone.top_block = L(LastLevelP6P7)(
    in_channels="${..out_channels}", out_channels="${..out_channels}", in_feature="p5"
)
model.sem_seg_head.input_shape.update(
    {
        f: L(ShapeSpec)(stride=s, channels="${....backbone.out_channels}")
        for f, s in (("p6", 64), ("p7", 128))
    }
)
model.sem_seg_head.fusion = ["rsp", "rsp", "rsp", "rsp", "sum"]
