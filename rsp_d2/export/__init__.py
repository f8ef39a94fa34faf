"""Deployment: RSP models as ONNX / TorchScript graphs (like ``detectron2.export``).

The relation runs as ``impl="export"`` (standard tensor ops) while tracing, whatever the config's
``MODEL.SEM_SEG_HEAD.RSP.IMPL``; :class:`SemanticSegmentationAdapter` documents the input
contract. ``tools/export_model.py`` is the command line.
"""
from .adapter import HeadAdapter, SemanticSegmentationAdapter
from .api import (EXPORT_METHODS, FORMATS, OPSET, compare_outputs, export_onnx,
                  export_torchscript, make_onnx_session, run_onnx)
from .build import (SUPPORTED_META_ARCHITECTURES, build_export_adapter, check_export_args, export_model,
                    image_to_tensor, verify_export)
