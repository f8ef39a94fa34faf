"""Dataset code for rsp_d2: data preparation and the synthetic stand-ins for Cityscapes and COCO.

Kept free of heavy imports on purpose: ``import rsp_d2.data`` must not pull in detectron2's
builtin dataset registration (which freezes ``DETECTRON2_DATASETS`` at import time).
"""
