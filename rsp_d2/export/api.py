"""Export to ONNX / TorchScript and the checks that an exported model computes what PyTorch does.

Both formats are made by tracing (``torch.jit.trace``; ``torch.onnx.export`` with the
TorchScript-based exporter, ``dynamo=False`` where torch has the choice): the relation switches
to ``impl="export"`` by itself while tracing (:func:`rsp_d2.layers.is_exporting`).
"""
import contextlib
import inspect
import io
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from ..layers.rse_export import fixed_size
from ..utils.errors import InputError

__all__ = ["OPSET", "FORMATS", "EXPORT_METHODS", "export_onnx", "export_torchscript",
           "run_onnx", "make_onnx_session", "compare_outputs"]

# ONNX opset of the exported graphs: Softmax over any axis (13+), LayerNorm-free, supported by
# onnxruntime >= 1.12 and by the TorchScript-based exporter of every torch this project tests.
OPSET = 17
FORMATS = ("onnx", "torchscript")
EXPORT_METHODS = ("tracing", "scripting")


def _quiet():
    """Tracing warns about every shape turned into a Python int: intended here, since the
    exported graph is specialized to the traced input size (see SemanticSegmentationAdapter)."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*[Cc]onstant folding.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    return ctx


def export_onnx(module: torch.nn.Module, inputs: Tuple[torch.Tensor, ...],
                input_names: Sequence[str] = ("image",), output_names: Sequence[str] = ("output",),
                opset: int = OPSET, dynamic_axes: Optional[Dict[str, Dict[int, str]]] = None) -> bytes:
    """The ONNX model (serialized bytes) of `module` traced on `inputs`, opset `opset`;
    `dynamic_axes` as ``torch.onnx.export``'s ({input or output name: {axis: name}}). Without
    dynamic axes the graph takes one input size only, so the relation's index tables are
    traced as constants (:func:`rsp_d2.layers.rse_export.fixed_size`)."""
    kwargs = dict(opset_version=opset, input_names=list(input_names),
                  output_names=list(output_names), do_constant_folding=True,
                  dynamic_axes=dynamic_axes)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch >= 2.9 defaults to the dynamo exporter (needs onnxscript)
    f = io.BytesIO()
    ctx = _quiet()
    try:
        with torch.no_grad(), (fixed_size() if dynamic_axes is None else contextlib.nullcontext()):
            torch.onnx.export(module.eval(), tuple(inputs), f, **kwargs)
    finally:
        ctx.__exit__(None, None, None)
    return f.getvalue()


def export_torchscript(module: torch.nn.Module, inputs: Tuple[torch.Tensor, ...],
                       method: str = "tracing") -> bytes:
    """The TorchScript archive (bytes for ``torch.jit.load``) of `module` traced on `inputs`.

    Raises:
        InputError: ``method="scripting"``: ``torch.jit.script`` cannot compile Detectron2's
            ``configurable`` modules taking dicts of features, nor the relation's registry of
            implementations (Python callables); tracing records the same computation.
    """
    if method == "scripting":
        raise InputError("--export-method scripting is not supported: torch.jit.script cannot "
                         "compile the head (a dict of features, the relation's registry of Python "
                         "implementations); use --export-method tracing")
    if method != "tracing":
        raise InputError(f"--export-method {method!r}: expected one of {EXPORT_METHODS}")
    ctx = _quiet()
    try:
        with torch.no_grad():
            traced = torch.jit.trace(module.eval(), tuple(inputs), check_trace=False)
    finally:
        ctx.__exit__(None, None, None)
    f = io.BytesIO()
    torch.jit.save(traced, f)
    return f.getvalue()


def run_onnx(model: bytes, inputs: Sequence[torch.Tensor], threads: Optional[int] = None):
    """Outputs (list of numpy arrays) of the ONNX model `model` (bytes or path) under
    onnxruntime's CPU provider with `threads` intra-op threads (default: onnxruntime's)."""
    session = make_onnx_session(model, threads)
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def make_onnx_session(model, threads: Optional[int] = None):
    """An onnxruntime CPU InferenceSession of `model` (bytes or path)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def compare_outputs(reference: torch.Tensor, exported) -> Dict[str, float]:
    """How far an exported model's logits are from PyTorch's, both (N, K, H, W).

    Returns:
        max_abs: max |difference|; rel_to_range: max_abs / (max - min of the reference);
        argmax_agreement: fraction of pixels with the same class.
    """
    ref = reference.detach().cpu().double().numpy()
    out = np.asarray(exported.detach().cpu() if isinstance(exported, torch.Tensor) else exported,
                     dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"compare_outputs: shapes differ, {ref.shape} vs {out.shape}")
    max_abs = float(np.abs(ref - out).max())
    span = float(ref.max() - ref.min())
    agree = float((ref.argmax(axis=1) == out.argmax(axis=1)).mean())
    return {"max_abs": max_abs, "rel_to_range": max_abs / span if span > 0 else max_abs,
            "argmax_agreement": agree}
