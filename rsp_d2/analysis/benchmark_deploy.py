"""The deployment cases of tools/benchmark.py: a head, a whole semantic model or a whole Panoptic
FPN, run by PyTorch and by onnxruntime (CPU) after :func:`rsp_d2.export.export_onnx`, on the
same input.

A *deploy pair* is built once per (what, head): the PyTorch module (its relation on
``impl="auto"``, as a trained model runs) and the ONNX session of the same module (its relation
traced as ``impl="export"``), each as a zero-argument ``run()``, plus how far the two outputs
are apart (:func:`rsp_d2.export.compare_outputs`), so a timing is never of a wrong graph.
"""
from typing import Callable, Dict

import torch

from ..export import (CombineSettings, HeadAdapter, PanopticFPNAdapter,
                      SemanticSegmentationAdapter, compare_outputs, compare_panoptic_outputs,
                      export_model, export_onnx, make_onnx_session)
from .benchmark_cases import HEADS, build_head, fpn_shapes
from ..model_zoo import get_config_file

__all__ = ["MODEL_CONFIGS", "RUNTIMES", "build_deploy_pair"]

# Whole models: Table I's Cityscapes configs (ResNet-50), random weights (no download; the
# speed does not depend on the values).
MODEL_CONFIGS = {"semantic_fpn": "configs/cityscapes/semantic_fpn_R50.yaml",
                 "rsp4": "configs/cityscapes/rsp4_R50.yaml"}
# Whole Panoptic FPNs (Table III, ResNet-50), random weights. The backbone's FrozenBN is
# replaced by GroupNorm: frozen statistics of a random initialization let the activations grow
# until every box scores 1.0 for one class, and detections of equal scores leave the graph
# check nothing to compare. ROI_HEADS.SCORE_THRESH_TEST 0, so that every run carries
# TEST.DETECTIONS_PER_IMAGE (100) detections through the mask head and the combination, the
# most a trained model does (random scores would pass no threshold).
PANOPTIC_CONFIGS = {"semantic_fpn": "configs/coco/panoptic_fpn_R50_1x.yaml",
                    "rsp4": "configs/coco/panoptic_rsp4.yaml"}
_PANOPTIC_RANDOM = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.RESNETS.NORM", "GN"]
# The smoke run (--quick) exports the same architectures on ResNet-18 with small FPN maps.
_QUICK_MODEL = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "64"]
RUNTIMES = ("pytorch", "onnxruntime")


def _head_module(head: str, height: int, width: int):
    torch.manual_seed(0)
    module = HeadAdapter(build_head(head)).eval()
    shapes = fpn_shapes(HEADS[head][0])
    inputs = tuple(torch.randn(1, s.channels, -(-height // s.stride), -(-width // s.stride))
                   for s in (shapes[f] for f in module.in_features))
    return module, inputs


def _model_module(head: str, height: int, width: int, quick: bool, panoptic: bool = False):
    from detectron2.modeling import build_model

    from ..config import load_config

    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"] + (_QUICK_MODEL if quick else [])
    configs = PANOPTIC_CONFIGS if panoptic else MODEL_CONFIGS
    cfg = load_config(get_config_file(configs[head]), opts + _PANOPTIC_RANDOM * panoptic)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    module = (PanopticFPNAdapter if panoptic else SemanticSegmentationAdapter)(model).eval()
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    return module, (image,)


def build_deploy_pair(what: str, head: str, height: int, width: int, threads: int,
                      quick: bool = False) -> Dict:
    """{"pytorch": run, "onnxruntime": run, "check": ..., "onnx_mb": size} for `head`
    ("semantic_fpn" | "rsp4") as the head alone on random FPN maps of a `height` x `width` image
    (`what="head"`), as the whole semantic model (`what="model"`) or the whole Panoptic FPN
    (`what="panoptic"`, exported with dynamic sizes as tools/export_model.py does) on a random
    image; both runtimes with `threads` intra-op threads. The check is
    :func:`compare_outputs` of the logits, or for a Panoptic FPN
    :func:`compare_panoptic_outputs` with its ``rel_to_range`` (of the semantic logits) and
    ``agreement`` (of the panoptic map)."""
    if what == "head":
        module, inputs = _head_module(head, height, width)
    elif what in ("model", "panoptic"):
        module, inputs = _model_module(head, height, width, quick, panoptic=what == "panoptic")
    else:
        raise ValueError(f"unknown deploy case {what!r}: expected 'head', 'model' or 'panoptic'")
    if what == "panoptic":
        data = export_model(module, inputs[0], "onnx")
    else:
        data = export_onnx(module, inputs)
    session = make_onnx_session(data, threads)
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}

    def run_pytorch() -> torch.Tensor:
        with torch.no_grad():
            return module(*inputs)

    def run_onnxruntime():
        out = session.run(None, feeds)
        return out if what == "panoptic" else out[0]

    if what == "panoptic":
        check = compare_panoptic_outputs(run_pytorch(), run_onnxruntime(), CombineSettings())
        check.update(rel_to_range=check["sem_seg_rel_to_range"],
                     agreement=check["panoptic_agreement"])
    else:
        check = compare_outputs(run_pytorch(), run_onnxruntime())
        check["agreement"] = check["argmax_agreement"]
    runs: Dict[str, Callable] = {"pytorch": run_pytorch, "onnxruntime": run_onnxruntime}
    return dict(runs, check=check, onnx_mb=round(len(data) / 2 ** 20, 1))
