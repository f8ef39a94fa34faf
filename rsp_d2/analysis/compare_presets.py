"""Named comparisons: the paper's Table I/IV/VI rows on Cityscapes, and the same heads in
miniature on the synthetic Cityscapes (the CPU demo model, configs/synthetic/rsp4_R18.yaml).

Each preset is a list of (name, config file relative to the repository, overrides); the first
is the default reference of the paired differences. The configs are the ones rsp_d2 ships
(:func:`rsp_d2.model_zoo.get_config_file`), so presets work from an installed package too.
"""
import os
import posixpath
from typing import List, Tuple

__all__ = ["PRESETS", "PRETRAINED_R18", "preset_variants"]

_CS = "configs/cityscapes"
_AB = "configs/cityscapes/ablations"
_DEMO = "configs/synthetic/rsp4_R18.yaml"
# The demo model is RSP-4 on P2-P7; Table I/IV heads fuse Q2-Q5 of the standard FPN.
_Q2_Q5 = ["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
          "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['p2','p3','p4','p5']"]
# The demo's schedule shortened by a quarter (same LR steps, proportionally), so one run stays
# within the ~5 minutes on 2 CPU cores that a table of 21+ runs in an afternoon allows.
_MINI_SCHEDULE = ["SOLVER.MAX_ITER", "450", "SOLVER.STEPS", "(340, 410)"]
# Also score the pixels within 3 pixels of a class boundary (12 at Cityscapes' size), where the
# cross-scale context should matter most.
_MINI_EVAL = ["TEST.BOUNDARY_BAND", "3"]


# Where tools/pretrain_backbone.py --output output/pretrain_R18 caches the pretrained ResNet-18
# (its default seed), relative to where the comparison runs: the mini and mini_table6 presets
# start every run from it.
PRETRAINED_R18 = os.path.join("output", "pretrain_R18", "R18_synthetic_seed1000.pth")


def _fusion(*kinds):
    return ["MODEL.SEM_SEG_HEAD.RSP.FUSION", "[" + ",".join(f"'{k}'" for k in kinds) + "]"]


PRESETS = {
    # Table I and the Table IV modules on Cityscapes (R50, 8 GPUs: --num-gpus 8).
    "cityscapes": [
        ("sum", f"{_CS}/baseline_R50.yaml", []),
        ("semantic_fpn", f"{_CS}/semantic_fpn_R50.yaml", []),
        ("rsp54", f"{_AB}/t4_rsp54.yaml", []),
        ("rsp2", f"{_CS}/rsp2_R50.yaml", []),
        ("self2", f"{_AB}/t4_self.yaml", []),
        ("context2", f"{_AB}/t4_context.yaml", []),
        ("rsp4", f"{_CS}/rsp4_R50.yaml", []),
    ],
    "table4": [(n, f"{_AB}/t4_{n}.yaml", []) for n in
               ("baseline", "rsp54", "rsp43", "rsp54_43", "self", "context")],
    "table6": [(n, f"{_AB}/t6_{n}.yaml", []) for n in
               ("baseline", "q6q7", "rsp76", "rsp76_65", "rsp76_65_54", "rsp_x4", "rsp43",
                "rsp54_43", "rsp65_54_43")],
}

# The Table I/IV heads and RSP-4 against its own control, in miniature: (name, overrides of the
# demo config, configs/synthetic/rsp4_R18.yaml, which is RSP-4 on P2-P7).
_SUM_P2P7 = ("sum_p2p7", _fusion("sum", "sum", "sum", "sum", "sum"))  # RSP-4's sum control
_RSP4 = ("rsp4", [])
_MINI_ROWS = [
    ("sum", _Q2_Q5 + _fusion("sum", "sum", "sum")),
    ("semantic_fpn", _Q2_Q5 + ["MODEL.SEM_SEG_HEAD.NAME", "SemSegFPNHead"]),
    ("rsp54", _Q2_Q5 + _fusion("rsp", "sum", "sum")),
    ("rsp2", _Q2_Q5 + _fusion("rsp", "rsp", "sum")),
    ("self2", _Q2_Q5 + _fusion("self", "self", "sum")),
    ("context2", _Q2_Q5 + _fusion("context", "context", "sum")),
    _RSP4,
    _SUM_P2P7,
]
# Table VI's placement rows in miniature, all on P2-P7: one or two RSP modules added from the
# top or from the bottom, the rest summed. sum_p2p7 and rsp4 are the "mini" preset's own
# variants, so a comparison in the same folder reuses their runs.
_TABLE6_ROWS = [
    _SUM_P2P7,
    ("rsp76", _fusion("rsp", "sum", "sum", "sum", "sum")),
    ("rsp43", _fusion("sum", "sum", "sum", "rsp", "sum")),
    ("rsp76_65", _fusion("rsp", "rsp", "sum", "sum", "sum")),
    ("rsp54_43", _fusion("sum", "sum", "rsp", "rsp", "sum")),
    _RSP4,
]


def _miniature(rows: List[Tuple[str, List[str]]], pretrained: bool):
    """[(name, config, overrides)] of the demo model on the mini schedule, one per (name,
    overrides of the demo config) row; `pretrained`: every run starts from the cached ResNet-18
    (:data:`PRETRAINED_R18`), else from scratch."""
    start = ["MODEL.WEIGHTS", PRETRAINED_R18] if pretrained else []
    return [(n, _DEMO, _MINI_SCHEDULE + _MINI_EVAL + opts + start) for n, opts in rows]


# From scratch: the pilot's design A (docs/comparison_pilot.md), the noisiest per CPU-hour.
PRESETS["mini_scratch"] = _miniature(_MINI_ROWS, pretrained=False)
# docs/MODEL_ZOO.md's benchmark: from a backbone pretrained once on a disjoint synthetic set, as
# the paper starts from ImageNet weights; with 96 training images (make_synthetic_datasets.py
# --num-train 96) the pilot's design C, its narrowest intervals.
PRESETS["mini"] = _miniature(_MINI_ROWS, pretrained=True)
PRESETS["mini_table6"] = _miniature(_TABLE6_ROWS, pretrained=True)


# The paper's row (config relative to configs/) each miniature variant stands for: its mIoU
# is what the report sets beside the miniature's.
_MINI_TWINS = {
    "sum": "cityscapes/baseline_R50.yaml",
    "semantic_fpn": "cityscapes/semantic_fpn_R50.yaml",
    "rsp54": "cityscapes/ablations/t4_rsp54.yaml",
    "rsp2": "cityscapes/rsp2_R50.yaml",
    "self2": "cityscapes/ablations/t4_self.yaml",
    "context2": "cityscapes/ablations/t4_context.yaml",
    "rsp4": "cityscapes/rsp4_R50.yaml",
    "sum_p2p7": "cityscapes/ablations/t6_q6q7.yaml",  # Table VI's "+Q6, Q7"
    "rsp76": "cityscapes/ablations/t6_rsp76.yaml",
    "rsp43": "cityscapes/ablations/t6_rsp43.yaml",
    "rsp76_65": "cityscapes/ablations/t6_rsp76_65.yaml",
    "rsp54_43": "cityscapes/ablations/t6_rsp54_43.yaml",
}


def _paper_row(preset: str, name: str, config: str) -> str:
    """The paper's config a variant stands for: its twin in a miniature, else its own."""
    if preset.startswith("mini"):
        return _MINI_TWINS[name]
    return posixpath.relpath(config, "configs")


def preset_variants(name: str):
    """The :class:`~rsp_d2.analysis.compare.Variant` list of preset `name` (absolute paths)."""
    from ..model_zoo import get_config_file
    from ..utils.errors import InputError
    from .compare import Variant

    if name not in PRESETS:
        raise InputError(f"--preset {name!r}: expected one of {sorted(PRESETS)}")
    return [Variant(n, get_config_file(cfg), [_absolute(o) for o in opts],
                    paper=_paper_row(name, n, cfg))
            for n, cfg, opts in PRESETS[name]]


def _absolute(value: str) -> str:
    """The cached weights' path made absolute (each run starts in a folder of its own)."""
    return os.path.abspath(value) if value == PRETRAINED_R18 else value
