# Table I "RSP-4": P2-P7, RSP between every pair but Q3-Q2, kernel 7
# (configs/cityscapes/rsp4_R50.yaml).
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from rsp_d2.modeling import FPNP2P7

from .rsp2_R50 import dataloader, lr_multiplier, model, optimizer, train

# MODEL.BACKBONE.NAME "build_resnet_fpn_p2p7_backbone": P6 and P7 by strided 3x3 convs on P5
# and P6 (RetinaNet's fed from P5, not C5), inputs padded to a multiple of 128.
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
# p7p6, p6p5, p5p4, p4p3, p3p2
model.sem_seg_head.fusion = ["rsp", "rsp", "rsp", "rsp", "sum"]
