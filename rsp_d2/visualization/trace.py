"""Everything the RSP head computes for one image, captured with forward hooks: Q_l, the
fusion inputs x = Q_l and z = up(A_{l+1}), A_l, and for the relation modules their relation
weights and query/key embeddings (Sec. III, Fig. 1b, 4, 5b)."""
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..layers import FUSIONS, fusion_has_relation
from ..utils.errors import InputError

__all__ = ["FusionTrace", "HeadTrace", "check_rsp_config", "rsp_head_of", "trace_head",
           "RELATION_KINDS"]

# Deprecated: the fusions say whether they compute a relation (fusion_has_relation).
RELATION_KINDS = tuple(name for name in FUSIONS if fusion_has_relation(name))


def _level_number(name: str) -> str:
    return name[1:] if name[:1] == "p" and name[1:].isdigit() else name


@dataclass
class FusionTrace:
    """One fusion A_fine = fuse(x, z), batch element 0, on the CPU in float32.

    Attributes:
        x: (C, H, W) Q_fine, the low-level map.
        z: (C, H, W) A_coarse upsampled to x's size.
        out: (C, H, W) A_fine.
        has_relation: the fusion computes a relation (its class says so: "rsp", "self").
        query_from, key_from: "x" or "z", what the fusion's f_q and f_k are applied to (its
            class says so: "rsp" relates x to z, "self" z to itself); None without a relation.
        weights: (heads, k*k, H, W) softmax relation weights (row-major offsets
            (dy, dx) in {-r..r}^2 * dilation), with a relation only.
        query, key: (C/d, H, W) f_q and f_k embeddings, with a relation only.
    """

    name: str
    coarse: str
    fine: str
    kind: str
    x: torch.Tensor
    z: torch.Tensor
    out: torch.Tensor
    has_relation: bool = False
    query_from: Optional[str] = None
    key_from: Optional[str] = None
    weights: Optional[torch.Tensor] = None
    query: Optional[torch.Tensor] = None
    key: Optional[torch.Tensor] = None
    kernel_size: Optional[int] = None
    dilation: Optional[int] = None

    @property
    def label(self) -> str:
        """The paper's name, e.g. "RSP-54" for the module between Q5 and Q4 (Fig. 4)."""
        return f"{self.kind.upper()}-{_level_number(self.coarse)}{_level_number(self.fine)}"

    @property
    def context(self) -> torch.Tensor:
        """(C, H, W) what the fusion adds to x: RSE(x, z) for RSP (Eq. 4), z for the sum."""
        return self.out - self.x


@dataclass
class HeadTrace:
    """The RSP head on one image.

    Attributes:
        image: (h, w, 3) uint8 RGB, the resized network input (without padding); every map of
            stride s covers it with ceil(h / s) x ceil(w / s) pixels (plus padding).
        original_size: (H, W) of the image as read; pixels are given in these coordinates.
        levels: head levels finest first, e.g. ["p2", ..., "p7"].
        strides: level -> stride w.r.t. the network input.
        q, a: level -> (C, H_l, W_l) Q_l and A_l.
        fusions: "p7p6"-style name -> FusionTrace, top-down (coarsest pair first).
    """

    image: np.ndarray
    original_size: Tuple[int, int]
    levels: List[str]
    strides: Dict[str, int]
    q: Dict[str, torch.Tensor] = field(default_factory=dict)
    a: Dict[str, torch.Tensor] = field(default_factory=dict)
    fusions: "OrderedDict[str, FusionTrace]" = field(default_factory=OrderedDict)

    def relation_fusions(self) -> List[FusionTrace]:
        return [f for f in self.fusions.values() if f.has_relation]

    def fusion_into(self, level: str) -> Optional[FusionTrace]:
        return next((f for f in self.fusions.values() if f.fine == level), None)

    def valid(self, level: str, t: torch.Tensor) -> torch.Tensor:
        """`t` (..., H_l, W_l) cropped to the part covering the image, not the padding."""
        s = self.strides[level]
        h, w = self.image.shape[:2]
        return t[..., : math.ceil(h / s), : math.ceil(w / s)]

    def extent(self, level: str) -> Tuple[float, float, float, float]:
        """imshow extent (left, right, bottom, top) of `valid(level, ...)` in image pixels."""
        s = self.strides[level]
        h, w = self.image.shape[:2]
        return (0.0, math.ceil(w / s) * s, math.ceil(h / s) * s, 0.0)

    def to_input_coords(self, y: float, x: float) -> Tuple[float, float]:
        """A pixel of the original image in the resized network input."""
        h0, w0 = self.original_size
        h, w = self.image.shape[:2]
        return y * h / h0, x * w / w0


def rsp_head_of(model):
    """The model's semantic head, checked to be an ``RSPHead``."""
    head = getattr(model, "sem_seg_head", None)
    if head is None or not hasattr(head, "fusions"):
        raise InputError(f"the model has no RSPHead (sem_seg_head is {type(head).__name__})")
    return head


def check_rsp_config(cfg, config_file: str, *, need_relations: bool) -> None:
    """Refuse, before building anything, a config whose head cannot be traced.

    Args:
        need_relations: also require at least one fusion with a relation (relation weights,
            query and key exist only there: "rsp", "self").
    """
    head = cfg.MODEL.SEM_SEG_HEAD
    if head.NAME != "RSPHead":
        raise InputError(f"{config_file}: MODEL.SEM_SEG_HEAD.NAME is {head.NAME!r}; this tool "
                         "reads the fusions of an 'RSPHead'")
    fusion = list(head.RSP.FUSION)
    levels = sorted(head.IN_FEATURES, key=lambda n: (len(n), n))
    if need_relations and not any(f in FUSIONS and fusion_has_relation(f) for f in fusion):
        names = [f"{levels[-1 - i]}{levels[-2 - i]}" if i + 2 <= len(levels) else f"#{i}"
                 for i in range(len(fusion))]
        pairs = ", ".join(f"{n}={f}" for n, f in zip(names, fusion))
        raise InputError(
            f"{config_file}: the head has no rsp/self fusion, so there are no relation weights "
            f"or query/key maps to draw; its fusions (MODEL.SEM_SEG_HEAD.RSP.FUSION) are "
            f"{pairs or 'none'}. Use an RSP config, e.g. configs/cityscapes/rsp4_R50.yaml")


@torch.no_grad()
def trace_head(predictor, image_bgr: np.ndarray) -> HeadTrace:
    """Run `predictor` (a :class:`Predictor`) on one image and capture its RSP head."""
    model = predictor.model
    head = rsp_head_of(model)
    inputs, resized = predictor.preprocess(image_bgr)
    shapes = model.backbone.output_shape()
    trace = HeadTrace(image=resized, original_size=image_bgr.shape[:2],
                      levels=list(head.in_features),
                      strides={n: shapes[n].stride for n in head.in_features})
    raw = {}

    def keep(name):
        def hook(module, args, output):
            raw[name] = (args, output)
        return hook

    handles = [head.q_convs[n].register_forward_hook(keep(("q", n))) for n in head.in_features]
    handles += [f.register_forward_hook(keep(("f", k))) for k, f in head.fusions.items()]
    try:
        model([inputs])
    finally:
        for h in handles:
            h.remove()

    def first(t):
        return t[0].detach().float().cpu()

    for n in head.in_features:
        trace.q[n] = first(raw[("q", n)][1])
    trace.a[head.in_features[-1]] = trace.q[head.in_features[-1]]
    for name, coarse, fine in head.fusion_pairs():  # top-down
        module = head.fusions[name]
        (x, z), out = raw[("f", name)]
        f = FusionTrace(name=name, coarse=coarse, fine=fine,
                        kind=getattr(module, "kind", "") or type(module).__name__,
                        x=first(x), z=first(z), out=first(out),
                        has_relation=getattr(module, "has_relation", False))
        if f.has_relation:  # the fusion knows what it relates: ask it, batch element 0
            q, k, _, _ = module.embeddings(x[:1], z[:1])
            f.weights = first(module.relation_weights(x[:1], z[:1]))
            f.query, f.key = first(q), first(k)
            f.query_from, f.key_from = module.query_from, module.key_from
            f.kernel_size, f.dilation = module.rse.kernel_size, module.rse.dilation
        trace.fusions[name] = f
        trace.a[fine] = f.out
    return trace
