"""From a config and a sample image to an exported model file, checked against PyTorch."""
import io
from typing import Dict, Optional

import numpy as np
import torch

from ..utils.errors import InputError
from .adapter import SemanticSegmentationAdapter
from .api import compare_outputs, export_onnx, export_torchscript, run_onnx, FORMATS

__all__ = ["SUPPORTED_META_ARCHITECTURES", "build_export_adapter", "image_to_tensor",
           "check_export_args", "export_model", "verify_export"]

# PanopticFPN: the semantic branch only (the README's Deploy section says why not the rest).
SUPPORTED_META_ARCHITECTURES = ("SemanticSegmentor", "PanopticFPN")


def build_export_adapter(cfg, model: Optional[torch.nn.Module] = None,
                         labels: bool = False) -> SemanticSegmentationAdapter:
    """The :class:`SemanticSegmentationAdapter` of `cfg`'s model with MODEL.WEIGHTS loaded (or of
    `model`), on the CPU in eval mode. InputError for a meta-architecture without a semantic
    head, or a bad checkpoint."""
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in SUPPORTED_META_ARCHITECTURES:
        raise InputError(f"MODEL.META_ARCHITECTURE={arch!r} cannot be exported: expected one of "
                         f"{SUPPORTED_META_ARCHITECTURES}")
    if model is None:
        from ..engine.checkpoint import load_model

        model = load_model(_on_cpu(cfg))
    return SemanticSegmentationAdapter(model.cpu().eval(), labels=labels).eval()


def _on_cpu(cfg):
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def image_to_tensor(image_hwc: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 image in the model's INPUT.FORMAT -> the adapter's (1, 3, H, W) float32."""
    return torch.as_tensor(np.ascontiguousarray(image_hwc.transpose(2, 0, 1)).astype("float32"))[None]


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


def export_model(adapter: torch.nn.Module, sample: torch.Tensor, fmt: str,
                 method: str = "tracing") -> bytes:
    """`adapter` exported as `fmt` ("onnx" | "torchscript"), traced on `sample` (1, 3, H, W)."""
    check_export_args(fmt, method)
    if fmt == "onnx":
        return export_onnx(adapter, (sample,), output_names=("labels" if adapter.labels else "logits",))
    return export_torchscript(adapter, (sample,), method)


def verify_export(adapter: torch.nn.Module, data: bytes, fmt: str, sample: torch.Tensor) -> Dict:
    """Run the exported `data` on `sample` (onnxruntime CPU, or torch.jit.load) and compare with
    `adapter`'s PyTorch output: :func:`compare_outputs` (logits) or the label agreement."""
    with torch.no_grad():
        ref = adapter(sample)
        if fmt == "onnx":
            out = torch.from_numpy(run_onnx(data, (sample,))[0])
        else:
            out = torch.jit.load(io.BytesIO(data))(sample)
    if adapter.labels:
        return {"label_agreement": float((ref == out).double().mean())}
    return compare_outputs(ref, out)
