"""The deployment cases of tools/benchmark.py: a head or a whole model, run by PyTorch and by
onnxruntime (CPU) after :func:`rsp_d2.export.export_onnx`, on the same input.

A *deploy pair* is built once per (what, head): the PyTorch module (its relation on
``impl="auto"``, as a trained model runs) and the ONNX session of the same module (its relation
traced as ``impl="export"``), each as a zero-argument ``run()``, plus how far the two outputs
are apart (:func:`rsp_d2.export.compare_outputs`), so a timing is never of a wrong graph.
"""
from typing import Callable, Dict

import torch

from ..export import (HeadAdapter, SemanticSegmentationAdapter, compare_outputs, export_onnx,
                      make_onnx_session)
from .benchmark_cases import HEADS, build_head, fpn_shapes
from ..model_zoo import get_config_file

__all__ = ["MODEL_CONFIGS", "RUNTIMES", "build_deploy_pair"]

# Whole models: Table I's Cityscapes configs (ResNet-50), random weights (no download; the
# speed does not depend on the values).
MODEL_CONFIGS = {"semantic_fpn": "configs/cityscapes/semantic_fpn_R50.yaml",
                 "rsp4": "configs/cityscapes/rsp4_R50.yaml"}
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


def _model_module(head: str, height: int, width: int, quick: bool):
    from detectron2.modeling import build_model

    from ..config import load_config

    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"] + (_QUICK_MODEL if quick else [])
    cfg = load_config(get_config_file(MODEL_CONFIGS[head]), opts)
    torch.manual_seed(0)
    module = SemanticSegmentationAdapter(build_model(cfg).eval()).eval()
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    return module, (image,)


def build_deploy_pair(what: str, head: str, height: int, width: int, threads: int,
                      quick: bool = False) -> Dict:
    """{"pytorch": run, "onnxruntime": run, "check": compare_outputs(...), "onnx_mb": size} for
    `head` ("semantic_fpn" | "rsp4") as the head alone on random FPN maps of a `height` x
    `width` image (`what="head"`) or as the whole model on a random image (`what="model"`);
    both runtimes with `threads` intra-op threads."""
    if what == "head":
        module, inputs = _head_module(head, height, width)
    elif what == "model":
        module, inputs = _model_module(head, height, width, quick)
    else:
        raise ValueError(f"unknown deploy case {what!r}: expected 'head' or 'model'")
    data = export_onnx(module, inputs)
    session = make_onnx_session(data, threads)
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}

    def run_pytorch() -> torch.Tensor:
        with torch.no_grad():
            return module(*inputs)

    def run_onnxruntime():
        return session.run(None, feeds)[0]

    check = compare_outputs(run_pytorch(), run_onnxruntime())
    runs: Dict[str, Callable] = {"pytorch": run_pytorch, "onnxruntime": run_onnxruntime}
    return dict(runs, check=check, onnx_mb=round(len(data) / 2 ** 20, 1))
