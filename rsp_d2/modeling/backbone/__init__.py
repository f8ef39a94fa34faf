"""Backbones: Detectron2's ResNet-FPN extended to P6/P7."""
from .fpn_p2p7 import FPNP2P7, build_resnet_fpn_p2p7_backbone
