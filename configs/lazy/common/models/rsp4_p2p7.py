# RSP-4 (Sec. III-B) from an RSP-2 model config: the ResNet-FPN extended to P6 and P7 by strided
# 3x3 convs on P5 and P6 (RetinaNet's LastLevelP6P7, fed from P5, not C5; inputs padded to a
# multiple of 128: FPNP2P7), and the head reading p2-p7 with RSP between every pair but the
# finest (MODEL.BACKBONE.NAME "build_resnet_fpn_p2p7_backbone" and RSP.FUSION of the yaml).
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from rsp_d2.modeling import FPNP2P7


def to_rsp4(model):
    """Make `model` (a Semantic or Panoptic FPN LazyConfig with RSPHead) RSP-4, in place."""
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
    return model
