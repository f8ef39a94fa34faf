"""The cases tools/benchmark.py measures, built from JSON-able specs (so that a worker process
can rebuild them): the RSE operation alone, and whole segmentation heads on random FPN maps.

RSE spec: {"kind": "rse", "impl", "n", "m", "c", "h", "w", "k", "mode": "fwd" | "fwdbwd"}.
Head spec: {"kind": "head", "head": one of HEADS, "impl", "n", "height", "width",
"mode": "inference" | "train"}; "train" is forward + loss + backward of the head.
Both take an optional "dtype" ("float32" default, "bfloat16"): the relation's inputs in that
dtype; the head run under ``torch.autocast`` to it (weights and inputs stay float32, as in
mixed-precision training and inference).
"""
from typing import Callable, Dict

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead

from rsp_d2.layers import rse_attention
from rsp_d2.modeling import RSPHead

__all__ = ["HEADS", "build_case", "warmup_case", "fpn_shapes"]

NUM_CLASSES, CONV_DIMS, IGNORE = 19, 128, 255

# name -> (FPN levels, fusion per adjacent pair top-down, or None for detectron2's head)
HEADS = {
    "baseline": (["p2", "p3", "p4", "p5"], ["sum", "sum", "sum"]),
    "rsp2": (["p2", "p3", "p4", "p5"], ["rsp", "rsp", "sum"]),
    "rsp4": (["p2", "p3", "p4", "p5", "p6", "p7"], ["rsp"] * 4 + ["sum"]),
    "semantic_fpn": (["p2", "p3", "p4", "p5"], None),
}


def fpn_shapes(levels) -> Dict[str, ShapeSpec]:
    """256-channel FPN levels p_l at stride 2**l."""
    return {f: ShapeSpec(channels=256, stride=2 ** int(f[1:])) for f in levels}


def build_head(name: str, impl: str = "auto") -> torch.nn.Module:
    levels, fusion = HEADS[name]
    shapes = fpn_shapes(levels)
    if fusion is None:
        return SemSegFPNHead(input_shape=shapes, num_classes=NUM_CLASSES, conv_dims=CONV_DIMS,
                             common_stride=4, norm="GN", ignore_value=IGNORE)
    return RSPHead(input_shape=shapes, num_classes=NUM_CLASSES, conv_dims=CONV_DIMS,
                   fusion=fusion, kernel_size=7, dilation=1, reduction=2, num_heads=1,
                   pos_embedding=True, impl=impl, norm="GN", loss_weight=1.0,
                   ignore_value=IGNORE)


def _rse_case(spec: Dict, device) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    n, m, c, h, w, k = (spec[x] for x in "nmchwk")
    grad = spec["mode"] == "fwdbwd"
    # Unit-variance logits, as after a trained f_q, f_k; the speed does not depend on it.
    q = torch.randn(n, m, h, w, generator=g) * m ** -0.5
    key, v = torch.randn(n, m, h, w, generator=g), torch.randn(n, c, h, w, generator=g)
    pos = torch.randn(k * k, m, generator=g) * 0.1
    dtype = getattr(torch, spec.get("dtype", "float32"))
    inputs = [t.to(device, dtype).requires_grad_(grad) for t in (q, key, v, pos)]
    grad_out = torch.randn(n, c, h, w, generator=g).to(device, dtype)

    def run():
        if not grad:
            with torch.no_grad():
                rse_attention(*inputs, kernel_size=k, impl=spec["impl"])
            return
        for t in inputs:
            t.grad = None
        rse_attention(*inputs, kernel_size=k, impl=spec["impl"]).backward(grad_out)

    return run


def _head_case(spec: Dict, device) -> Callable[[], None]:
    torch.manual_seed(0)
    head = build_head(spec["head"], spec.get("impl", "auto")).to(device)
    n, height, width = spec["n"], spec["height"], spec["width"]
    features = {f: torch.randn(n, s.channels, -(-height // s.stride), -(-width // s.stride),
                               device=device)
                for f, s in fpn_shapes(HEADS[spec["head"]][0]).items()}
    dtype = getattr(torch, spec.get("dtype", "float32"))
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    if spec["mode"] == "inference":
        head.eval()

        def run():
            with torch.no_grad(), autocast:
                head(features)
        return run

    head.train()
    targets = torch.randint(0, NUM_CLASSES, (n, height, width), device=device)

    def run():
        head.zero_grad(set_to_none=True)
        with autocast:
            _, losses = head(features, targets)
        losses["loss_sem_seg"].backward()
    return run


def build_case(spec: Dict) -> Callable[[], None]:
    """A zero-argument callable running the case once; inputs are built here, not in it."""
    device = torch.device(spec.get("device", "cpu"))
    if spec["kind"] == "rse":
        return _rse_case(spec, device)
    if spec["kind"] == "head":
        return _head_case(spec, device)
    raise ValueError(f"unknown benchmark case kind {spec['kind']!r}")


def warmup_case(spec: Dict) -> Dict:
    """The same case on a tiny input: runs the same code paths, allocates next to nothing."""
    if spec["kind"] == "rse":
        return dict(spec, n=1, h=8, w=8)
    return dict(spec, n=1, height=128, width=128)
