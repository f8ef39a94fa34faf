"""The registry of the cross-scale fusions, by the name MODEL.SEM_SEG_HEAD.RSP.FUSION uses.

`RelationalSemanticsPropagator` is the paper's RSP (Eq. 4); `SumFusion` is the baseline's
pixel-to-pixel sum; `SelfRelationFusion` and `ContextFusion` are the +SELF and +CONTEXT
ablations of Table IV. Each is a :class:`~rsp_d2.layers.fusion_base.Fusion` in a module of its
own that says what it is (``kind``, ``has_relation``, ``query_from``/``key_from``); adding one
is that module and its line in ``FUSIONS`` below (CONTRIBUTING.md).

Pure PyTorch: nothing here imports detectron2.
"""
from typing import Dict, Optional, Type

from .fusion_base import Fusion, FusionSettings
from .fusion_context import ContextFusion, window_average
from .fusion_rsp import RelationalSemanticsPropagator, SelfRelationFusion
from .fusion_sum import SumFusion
from .rse_extractor import RelationalSemanticsExtractor

__all__ = [
    "Fusion",
    "FusionSettings",
    "FUSIONS",
    "build_fusion",
    "fusion_class",
    "fusion_has_relation",
    # Defined next door, importable from here as before:
    "RelationalSemanticsExtractor",
    "RelationalSemanticsPropagator",
    "SelfRelationFusion",
    "ContextFusion",
    "SumFusion",
    "window_average",
]

FUSIONS: Dict[str, Type[Fusion]] = {cls.kind: cls for cls in (
    SumFusion,
    RelationalSemanticsPropagator,
    SelfRelationFusion,
    ContextFusion,
)}


def fusion_class(name: str) -> Type[Fusion]:
    """The fusion class called `name`; ValueError naming the choices otherwise."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; expected one of {sorted(FUSIONS)}")
    return FUSIONS[name]


def fusion_has_relation(name: str) -> bool:
    """Whether the fusion `name` computes relation weights, a query and a key (Eq. 1-3)."""
    return fusion_class(name).has_relation


def build_fusion(name: str, channels: int, settings: Optional[FusionSettings] = None,
                 **options) -> Fusion:
    """Build the fusion called `name` for `channels`-channel maps from `settings` (each fusion
    takes the ones it uses), or from `options`, the fields of :class:`FusionSettings`."""
    if settings is None:
        settings = FusionSettings(**options)
    elif options:
        raise TypeError("build_fusion: pass settings or options, not both")
    return fusion_class(name).from_settings(channels, settings)
