from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone

__all__ = ["FPNP2P7", "build_resnet_fpn_p2p7_backbone"]


class FPNP2P7(FPN):
    """FPN whose inputs are padded to a multiple of its coarsest output stride.

    Detectron2's FPN derives ``size_divisibility`` from the bottom-up strides only (32), but
    P6/P7 (strides 64/128) made by strided 3x3 convs then round odd sizes up, and maps of
    adjacent levels stop being exact 2x multiples (e.g. a 224 x 320 input). Padding to 128
    keeps every level exactly half its finer neighbour.
    """

    @property
    def size_divisibility(self):
        return max(s.stride for s in self.output_shape().values())


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_p2p7_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-FPN with P2-P7 (Sec. III-B): P2-P5 from 1x1 lateral convs as in FPN, P6 and P7
    from strided 3x3 convs on P5 and P6 (as RetinaNet's, but fed from P5, not C5).

    Returns:
        FPNP2P7 producing {"p2": stride 4, ..., "p7": stride 128}, MODEL.FPN.OUT_CHANNELS each.
    """
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPNP2P7(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
