"""Multiply-adds and parameters of a semantic segmentation head, counted the way the paper
reports them (Table I): the head only, backbone and FPN excluded, one fused multiply-add
counted as one FLOP, and only conv / linear / matmul / einsum counted (norms, activations,
upsampling, pooling and softmax are not); and of the whole model (Table II: backbone, FPN and
head, the same ops counted)."""
from typing import Callable, Dict, Optional, Tuple

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

__all__ = ["count_head", "count_model", "build_head_for_analysis", "head_input_features"]


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


class _WholeModel(nn.Module):
    """Traceable semantic model: a normalized (1, 3, H, W) image in, logits before the final
    upsampling out (Detectron2's normalization and upsampling are elementwise, uncounted)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, image):
        return self.head.layers(self.backbone(image))


def _analysis_cfg(cfg: CfgNode) -> CfgNode:
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    if "RSP" in cfg.MODEL.SEM_SEG_HEAD:
        cfg.MODEL.SEM_SEG_HEAD.RSP.IMPL = "reference"  # the readable definition is what we count
    return cfg


def build_head_for_analysis(cfg: CfgNode) -> Tuple[nn.Module, Dict[str, ShapeSpec], int]:
    """Build cfg's semantic head in eval mode, with the reference relation implementation.

    Returns:
        (head, the backbone's output shapes, the backbone's size divisibility).
    """
    cfg = _analysis_cfg(cfg)
    with torch.device("meta"):  # only its output shapes are needed: no weights allocated
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


def _counted(module: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> JitModelAnalysis:
    analysis = JitModelAnalysis(module, inputs)
    return analysis.set_op_handle(**_HANDLES).unsupported_ops_warnings(False) \
        .uncalled_modules_warnings(False)


def _trace_counts(head: nn.Module, shapes: Dict[str, ShapeSpec], div: int, height: int,
                  width: int) -> Tuple[int, Dict[str, int]]:
    """(total multiply-adds, {top-level module: multiply-adds}) of one height x width forward."""
    names = head.in_features
    feats = head_input_features(shapes, names, height, width, div)
    analysis = _counted(_Logits(head, names), tuple(feats[n] for n in names))
    by_module = {k.replace("head.", "", 1): v for k, v in analysis.by_module().items()
                 if k.count(".") == 1 and k.startswith("head.")}
    return int(analysis.total()), by_module


def _extrapolate(big: int, small: int, big_pixels: int, small_pixels: int, pixels: int) -> int:
    """The affine count a * pixels + b through (small_pixels, small) and (big_pixels, big)."""
    slope, rest = divmod((big - small) * (pixels - big_pixels), big_pixels - small_pixels)
    if rest:
        raise ValueError("FLOP count is not affine in the pixel count; count with shrink=1")
    return big + slope


@torch.no_grad()
def count_head(cfg: CfgNode, height: int = 1024, width: int = 2048,
               shrink: Optional[int] = 1) -> Dict[str, float]:
    """Count cfg's head on one height x width image.

    Every counted op of the head (convs, the relation einsums) costs a fixed amount per output
    position of its FPN level, plus terms that do not depend on the image (f_p's k*k*C*M
    position embedding per module). When every level's grid divides exactly, the count is
    therefore a * H*W + b. With ``shrink`` > 1 the head is traced at (H/shrink, W/shrink) and
    (H/(2 shrink), W/(2 shrink)) and the line through both counts is evaluated at H x W: the
    same integers as a trace at H x W, for a fraction of the time (tests/test_flops_tables.py
    checks the equality). ``shrink=None`` takes the largest power of two (up to 1024) whose
    sizes are multiples of the coarsest grid, else 1.

    Returns:
        {"flops": multiply-adds, "params": parameters, "by_module": {module: multiply-adds}}.
    """
    head, shapes, div = build_head_for_analysis(cfg)
    grid = max([max(1, div)] + [shapes[n].stride for n in head.in_features])
    flops, by_module = _scaled_counts(
        lambda h, w: _trace_counts(head, shapes, div, h, w), height, width, grid, shrink)
    return {
        "flops": float(flops),
        "params": float(sum(p.numel() for p in head.parameters())),
        "by_module": by_module,
    }


def _scaled_counts(trace: Callable[[int, int], Tuple[int, Dict[str, int]]], height: int,
                   width: int, grid: int, shrink: Optional[int]) -> Tuple[int, Dict[str, int]]:
    """`trace`(H, W) at height x width, or at 1/shrink and 1/(2 shrink) of each side and
    extrapolated (see :func:`count_head`, whose `shrink` this is)."""
    if shrink is None:
        shrink = next((s for s in (2 ** i for i in range(10, 0, -1))
                       if not height % (2 * s * grid) and not width % (2 * s * grid)), 1)
    if shrink == 1:
        return trace(height, width)
    if height % (2 * shrink * grid) or width % (2 * shrink * grid):
        raise ValueError(f"shrink={shrink}: {height}x{width} / {2 * shrink} is not a multiple "
                         f"of the coarsest grid ({grid} pixels), the count would not scale")
    sizes = [(height // shrink, width // shrink), (height // (2 * shrink), width // (2 * shrink))]
    (big, big_mod), (small, small_mod) = [trace(h, w) for h, w in sizes]
    px = [h * w for h, w in sizes]
    return (_extrapolate(big, small, px[0], px[1], height * width),
            {k: _extrapolate(v, small_mod[k], px[0], px[1], height * width)
             for k, v in big_mod.items()})


@torch.no_grad()
def count_model(cfg: CfgNode, height: int = 1024, width: int = 2048,
                shrink: Optional[int] = None) -> Dict[str, float]:
    """Count cfg's whole semantic model (backbone, FPN, head: Table II's "FLOPs" column) on
    one height x width image, the ops of :func:`count_head`; ``shrink`` as there (affine in the
    pixel count for the same reason).

    Returns:
        {"flops": multiply-adds, "params": parameters,
         "by_module": {"backbone": multiply-adds, "head": multiply-adds}}.
    """
    cfg = _analysis_cfg(cfg)
    backbone = build_backbone(cfg).eval()
    head = build_sem_seg_head(cfg, backbone.output_shape()).eval()
    model = _WholeModel(backbone, head)
    grid = max([max(1, backbone.size_divisibility)] +
               [s.stride for s in backbone.output_shape().values()])

    def trace(h, w):
        analysis = _counted(model, (torch.randn(1, 3, h, w),))
        return int(analysis.total()), {k: int(analysis.by_module()[k]) for k in ("backbone", "head")}

    flops, by_module = _scaled_counts(trace, height, width, grid, shrink)
    return {"flops": float(flops), "params": float(sum(p.numel() for p in model.parameters())),
            "by_module": by_module}
