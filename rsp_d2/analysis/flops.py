"""Multiply-adds and parameters of a semantic segmentation head, counted the way the paper
reports them (Table I): the head only, backbone and FPN excluded, one fused multiply-add
counted as one FLOP, and only conv / linear / matmul / einsum counted (norms, activations,
upsampling, pooling and softmax are not)."""
from typing import Dict, Tuple

import torch
from fvcore.nn.jit_analysis import JitModelAnalysis
from fvcore.nn.jit_handles import (
    addmm_flop_jit,
    bmm_flop_jit,
    conv_flop_jit,
    get_shape,
    linear_flop_jit,
    matmul_flop_jit,
)
from torch import nn

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_sem_seg_head

__all__ = ["count_head", "build_head_for_analysis", "head_input_features"]


def _einsum_macs(inputs, outputs) -> int:
    """Exact multiply-adds of a two-operand einsum: the product of the sizes of all its indices.

    fvcore's own handle asks numpy's path optimizer, which allocates float64 copies of the
    operands (gigabytes for the unfolded reference at 1024 x 2048).
    """
    equation = inputs[0].toIValue().replace(" ", "")
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    lhs = equation.split("->")[0].split(",")
    if len(lhs) != 2:
        raise NotImplementedError(f"FLOP counting supports two-operand einsum, got {equation!r}")
    sizes = {}
    for letters, shape in zip(lhs, shapes):
        sizes.update(zip(letters, shape))
    macs = 1
    for s in sizes.values():
        macs *= s
    return macs


_HANDLES = {
    "aten::_convolution": conv_flop_jit,
    "aten::linear": linear_flop_jit,
    "aten::addmm": addmm_flop_jit,
    "aten::matmul": matmul_flop_jit,
    "aten::mm": matmul_flop_jit,
    "aten::bmm": bmm_flop_jit,
    "aten::einsum": _einsum_macs,
}


class _Logits(nn.Module):
    """Traceable view of a head: features in, logits before the final upsampling out."""

    def __init__(self, head: nn.Module, names):
        super().__init__()
        self.head, self.names = head, list(names)

    def forward(self, *maps):
        return self.head.layers(dict(zip(self.names, maps)))


def build_head_for_analysis(cfg: CfgNode) -> Tuple[nn.Module, Dict[str, ShapeSpec], int]:
    """Build cfg's semantic head in eval mode, with the reference relation implementation.

    Returns:
        (head, the backbone's output shapes, the backbone's size divisibility).
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    if "RSP" in cfg.MODEL.SEM_SEG_HEAD:
        cfg.MODEL.SEM_SEG_HEAD.RSP.IMPL = "reference"  # the readable definition is what we count
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    head = build_sem_seg_head(cfg, shapes).eval()
    return head, shapes, backbone.size_divisibility


def head_input_features(shapes: Dict[str, ShapeSpec], names, height: int, width: int,
                        size_divisibility: int = 1) -> Dict[str, torch.Tensor]:
    """Random FPN maps for an input of height x width padded like Detectron2 pads it:
    {name: (1, C, ceil(H'/s), ceil(W'/s))}."""
    div = max(1, size_divisibility)
    h, w = -(-height // div) * div, -(-width // div) * div
    return {n: torch.randn(1, shapes[n].channels, -(-h // shapes[n].stride), -(-w // shapes[n].stride))
            for n in names}


@torch.no_grad()
def count_head(cfg: CfgNode, height: int = 1024, width: int = 2048) -> Dict[str, float]:
    """Count cfg's head on one height x width image.

    Returns:
        {"flops": multiply-adds, "params": parameters, "by_module": {module: multiply-adds}}.
    """
    head, shapes, div = build_head_for_analysis(cfg)
    names = head.in_features
    feats = head_input_features(shapes, names, height, width, div)
    wrapper = _Logits(head, names)
    analysis = JitModelAnalysis(wrapper, tuple(feats[n] for n in names)).set_op_handle(**_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_module = {k.replace("head.", "", 1): v for k, v in analysis.by_module().items()
                 if k.count(".") == 1 and k.startswith("head.")}
    return {
        "flops": float(analysis.total()),
        "params": float(sum(p.numel() for p in head.parameters())),
        "by_module": by_module,
    }
