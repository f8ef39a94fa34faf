"""From a config and a sample image to an exported model file, checked against PyTorch."""
import io
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..utils.errors import InputError
from .adapter import SemanticSegmentationAdapter
from .api import FORMATS, compare_outputs, export_onnx, export_torchscript, run_onnx
from .panoptic import CombineSettings, PanopticFPNAdapter, compare_panoptic_outputs

__all__ = ["SUPPORTED_META_ARCHITECTURES", "build_export_adapter", "image_to_tensor",
           "check_export_args", "export_model", "verify_export", "second_size"]

# PanopticFPN: whole (PanopticFPNAdapter) or its semantic branch (semantic_only).
SUPPORTED_META_ARCHITECTURES = ("SemanticSegmentor", "PanopticFPN")
Adapter = Union[SemanticSegmentationAdapter, PanopticFPNAdapter]


def build_export_adapter(cfg, model: Optional[torch.nn.Module] = None, labels: bool = False,
                         semantic_only: bool = False) -> Adapter:
    """The adapter of `cfg`'s model with MODEL.WEIGHTS loaded (or of `model`), on the CPU in
    eval mode: :class:`PanopticFPNAdapter` for a Panoptic FPN (its semantic branch alone with
    `semantic_only`), else :class:`SemanticSegmentationAdapter`. InputError for another
    meta-architecture, `labels` for a whole Panoptic FPN, or a bad checkpoint."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in SUPPORTED_META_ARCHITECTURES:
        raise InputError(f"MODEL.META_ARCHITECTURE={arch!r} cannot be exported: expected one of "
                         f"{SUPPORTED_META_ARCHITECTURES}")
    whole = arch == "PanopticFPN" and not semantic_only
    if whole and labels:
        raise InputError("--labels applies to a semantic output: a whole Panoptic FPN exports "
                         "instances and semantic logits (add --semantic-only for its semantic "
                         "branch alone)")
    if whole and (cfg.MODEL.ROI_HEADS.NAME != "StandardROIHeads" or not cfg.MODEL.MASK_ON
                  or cfg.MODEL.KEYPOINT_ON):
        raise InputError(f"MODEL.ROI_HEADS.NAME={cfg.MODEL.ROI_HEADS.NAME!r} (MASK_ON "
                         f"{cfg.MODEL.MASK_ON}, KEYPOINT_ON {cfg.MODEL.KEYPOINT_ON}): a whole "
                         "Panoptic FPN exports with Panoptic FPN's own ROI heads only "
                         "(StandardROIHeads, MASK_ON True, KEYPOINT_ON False); add "
                         "--semantic-only to export its semantic branch")
    if model is None:
        from ..engine.checkpoint import load_model

        model = load_model(_on_cpu(cfg))
    model = model.cpu().eval()
    if whole:
        return PanopticFPNAdapter(model).eval()
    return SemanticSegmentationAdapter(model, labels=labels).eval()


def _on_cpu(cfg):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def image_to_tensor(image_hwc: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 image in the model's INPUT.FORMAT -> the adapter's (1, 3, H, W) float32."""
    return torch.as_tensor(np.ascontiguousarray(image_hwc.transpose(2, 0, 1)).astype("float32"))[None]


def second_size(sample: torch.Tensor, size_divisibility: int) -> torch.Tensor:
    """A seeded random image one `size_divisibility` tile taller and wider than `sample`: the
    size a dynamic export is checked at besides the traced one."""
    d = max(1, size_divisibility)
    h, w = sample.shape[2] + d, sample.shape[3] + d
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)) * 255


def check_export_args(fmt: str, method: str) -> None:
    """InputError unless (`fmt`, `method`) is an export this package makes (before any model is
    built, so that the user hears it first)."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: expected one of {FORMATS}")
    if fmt == "onnx" and method != "tracing":
        raise InputError(f"--export-method {method!r} does not apply to --format onnx "
                         "(torch.onnx.export traces)")
    if method == "scripting":
        export_torchscript(None, (), method)  # raises the reason


def _names(adapter: Adapter):
    """(output names, ONNX dynamic axes): height and width of the image and of the semantic
    output, and the number of detections."""
    hw = {2: "height", 3: "width"}
    if isinstance(adapter, PanopticFPNAdapter):
        names = list(adapter.OUTPUT_NAMES)
        axes = {n: {0: "detections"} for n in names[:4]}
        axes["sem_seg"] = hw
    else:
        names = ["labels" if adapter.labels else "logits"]
        axes = {names[0]: {1: "height", 2: "width"} if adapter.labels else hw}
    return names, dict(axes, image=hw)


def export_model(adapter: Adapter, sample: torch.Tensor, fmt: str,
                 method: str = "tracing") -> bytes:
    """`adapter` exported as `fmt` ("onnx" | "torchscript"), traced on `sample` (1, 3, H, W);
    height and width are dynamic in both formats."""
    check_export_args(fmt, method)
    if fmt == "onnx":
        names, axes = _names(adapter)
        return export_onnx(adapter, (sample,), output_names=names, dynamic_axes=axes)
    return export_torchscript(adapter, (sample,), method)


def _run(adapter: Adapter, data: bytes, fmt: str, image: torch.Tensor) -> List:
    if fmt == "onnx":
        return [torch.from_numpy(o) for o in run_onnx(data, (image,))]
    with torch.no_grad():
        out = torch.jit.load(io.BytesIO(data))(image)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def verify_export(adapter: Adapter, data: bytes, fmt: str, images: Sequence[torch.Tensor],
                  combine: Optional[CombineSettings] = None) -> List[Dict]:
    """Run the exported `data` on each of `images` (onnxruntime CPU, or torch.jit.load) and
    compare with `adapter`'s PyTorch outputs: :func:`compare_outputs` (logits), the label
    agreement, or :func:`compare_panoptic_outputs` (with `combine`, default Detectron2's
    thresholds). One dict per image, with its ``size``."""
    checks = []
    for image in images:
        with torch.no_grad():
            ref = adapter(image)
        out = _run(adapter, data, fmt, image)
        if isinstance(adapter, PanopticFPNAdapter):
            check = compare_panoptic_outputs(ref, out, combine or CombineSettings())
        elif adapter.labels:
            check = {"label_agreement": float((ref == out[0]).double().mean())}
        else:
            check = compare_outputs(ref, out[0])
        checks.append({"size": tuple(image.shape[2:]), **check})
    return checks
