from typing import Dict

import torch
import torch.nn.functional as F

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

    At inference, an input of one 128 x 128 tile (a square or small image) is padded further, to
    128 x 256: its P7 would be a single pixel, which a GroupNorm with one channel per group (the
    RSP head's Q_7 with MODEL.SEM_SEG_HEAD.NORM "GN" and 32 channels) refuses to normalize
    ("Expected more than 1 value per channel"). Its P7 is then 1 x 2, as for the demo configs'
    128 x 256 training crops; inputs of any other size are left as they were.
    """

    @property
    def size_divisibility(self):
        return max(s.stride for s in self.output_shape().values())

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, 3, H, W) normalized images, zero-padded to ``size_divisibility`` by the
                meta-architecture (``ImageList.from_tensors``).

        Returns:
            {"p2": (N, C, H / 4, W / 4), ..., "p7": (N, C, H / 128, W / 128)}, of the input
            padded to 128 x 256 in eval mode when H, W <= 128; callers crop their outputs to
            the image size (``sem_seg_postprocess``, the export adapter), as for any padding.
        """
        d = self.size_divisibility
        h, w = x.shape[-2:]
        if torch.jit.is_tracing() and not self.training:
            # Traced sizes are tensors: arithmetic instead of the branch below, so that the
            # graph decides for every input size (the pads are zero beyond one tile).
            one_tile = (h <= d) & (w <= d)
            x = F.pad(x, (0, one_tile * (2 * d - w), 0, one_tile * (d - h)))
        elif not self.training and h <= d and w <= d:
            # The zeros ImageList pads with, so that this is padding like any other.
            x = F.pad(x, (0, 2 * d - w, 0, d - h))
        return super().forward(x)


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
