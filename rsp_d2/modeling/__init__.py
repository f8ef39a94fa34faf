"""Detectron2 parts of the RSP head; importing this registers them."""
from .backbone import FPNP2P7, build_resnet_fpn_p2p7_backbone
from .rsp_head import RSPHead
