"""Dataset code for rsp_d2: data preparation and the synthetic stand-ins for Cityscapes and COCO.

Imports nothing itself; use the submodules (``rsp_d2.data.panoptic_fpn``,
``rsp_d2.data.synthetic``). Note that ``import rsp_d2`` already imports ``detectron2.data``, which
registers the builtin datasets under ``$DETECTRON2_DATASETS`` as it is at that moment.
"""
from .mapper import RSPSemanticDatasetMapper, build_mapper  # noqa: F401
