"""Data: the Sec. IV-A semantic mapper, the COCO panoptic -> stuff-label converter of Panoptic
FPN (``rsp_d2.data.coco_panoptic_stuff``) and the synthetic stand-ins for Cityscapes and COCO
(``rsp_d2.data.synthetic``).

``import rsp_d2`` imports ``detectron2.data``, which registers the builtin datasets under
``$DETECTRON2_DATASETS`` as it is at that moment: set it before importing.
"""
from .mapper import RSPSemanticDatasetMapper, build_mapper  # noqa: F401
