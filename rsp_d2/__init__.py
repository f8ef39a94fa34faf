"""rsp_d2: the RSP head (Bai et al., RA-L 2021) for Detectron2.

``import rsp_d2`` registers ``RSPHead`` in SEM_SEG_HEADS_REGISTRY and
``build_resnet_fpn_p2p7_backbone`` in BACKBONE_REGISTRY; ``add_rsp_config`` adds their keys.
"""
from .config import add_rsp_config
from . import modeling  # noqa: F401  (registers the head and the backbone)

__version__ = "0.1.0"
