"""Deployment: RSP models as ONNX / TorchScript graphs (like ``detectron2.export``), with dynamic
height and width.

The relation runs as ``impl="export"`` (standard tensor ops) while tracing, whatever the config's
``MODEL.SEM_SEG_HEAD.RSP.IMPL``. :class:`SemanticSegmentationAdapter` (a semantic model, or a
Panoptic FPN's semantic branch) and :class:`PanopticFPNAdapter` (a whole Panoptic FPN; the
panoptic combination after the graph, :func:`panoptic_from_outputs`) document their input and
output contracts. ``tools/export_model.py`` is the command line.
"""
from .adapter import HeadAdapter, SemanticSegmentationAdapter
from .api import (EXPORT_METHODS, FORMATS, OPSET, compare_outputs, export_onnx,
                  export_torchscript, make_onnx_session, run_onnx)
from .build import (SUPPORTED_META_ARCHITECTURES, build_export_adapter, check_export_args, export_model,
                    image_to_tensor, second_size, verify_export)
from .panoptic import (CombineSettings, PanopticFPNAdapter, compare_panoptic_outputs,
                       panoptic_from_outputs)
