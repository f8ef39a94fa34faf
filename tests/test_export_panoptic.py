"""A whole Panoptic FPN with the RSP-4 head, deployed (rsp_d2/export/panoptic.py): one traced
graph for both branches (ONNX under onnxruntime's CPU provider, and TorchScript), the panoptic
combination after it, equal to PyTorch on synthetic COCO panoptic images at the traced size
and at another (height and width are dynamic), and through tools/export_model.py.

The model has random weights, ROI_HEADS.SCORE_THRESH_TEST 0 (it detects the full
TEST.DETECTIONS_PER_IMAGE, 20) and the combination's instance threshold 0 (it places
instances), and no cap on the proposals that the RPN's NMS keeps (RPN.POST_NMS_TOPK_TEST 1000
of at most 500): their number differs from image to image, which a graph with a constant count
(Detectron2's ROI heads traced as they are) cannot run.
"""
import glob
import io

import cv2
import pytest
import torch
from support.tools import call_main
from support.train_net import PANOPTIC_TINY

from detectron2.modeling import build_model

from rsp_d2.config import load_config
from rsp_d2.data.image_io import read_image
from rsp_d2.export import (CombineSettings, PanopticFPNAdapter, export_model, image_to_tensor,
                           panoptic_from_outputs, verify_export)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

DETECT_ALL = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
              "MODEL.RPN.POST_NMS_TOPK_TEST", "1000",
              "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.0"]
SIZES = [(128, 192), (256, 320)]  # the traced size and another, both multiples of 64 only


def _ops(graph):
    """The op types of an ONNX graph and of its subgraphs (the branches of If nodes)."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attribute in node.attribute:
            for sub in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                ops |= _ops(sub)
    return ops


@pytest.fixture(scope="module")
def panoptic():
    cfg = load_config(PANOPTIC_TINY, DETECT_ALL)
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


@pytest.fixture(scope="module")
def coco_images(synthetic_root):
    """Two synthetic COCO val images, BGR (1, 3, H, W) float32, resized to SIZES."""
    files = sorted(glob.glob(str(synthetic_root / "coco" / "val2017" / "*.jpg")))[:2]
    assert len(files) == 2, files
    return [image_to_tensor(cv2.resize(read_image(f, "BGR"), (w, h)))
            for f, (h, w) in zip(files, SIZES)]


def test_adapter_then_combination_is_panoptic_fpns_inference(panoptic, coco_images):
    """The graph's outputs, combined after it, are what PanopticFPN.forward returns."""
    cfg, model = panoptic
    proposals = []
    for image in coco_images:  # what the export tests rely on: a count that varies
        with torch.no_grad():
            images = model.preprocess_image([{"image": image[0]}])
            found, _ = model.proposal_generator(images, model.backbone(images.tensor), None)
        proposals.append(len(found[0]))
    assert proposals[0] != proposals[1] and max(proposals) < 1000, proposals
    adapter = PanopticFPNAdapter(model)
    for image in coco_images:
        with torch.no_grad():
            ours = panoptic_from_outputs(adapter(image), CombineSettings.from_config(cfg))
            theirs = model([{"image": image[0]}])[0]
        assert len(ours["instances"]) == cfg.TEST.DETECTIONS_PER_IMAGE
        torch.testing.assert_close(ours["sem_seg"], theirs["sem_seg"])
        for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
            a, b = ours["instances"].get(field), theirs["instances"].get(field)
            torch.testing.assert_close(getattr(a, "tensor", a), getattr(b, "tensor", b))
        assert torch.equal(ours["panoptic_seg"][0], theirs["panoptic_seg"][0])
        assert ours["panoptic_seg"][1] == theirs["panoptic_seg"][1]
        assert any(s["isthing"] for s in ours["panoptic_seg"][1])  # instances were placed


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_whole_export_equals_pytorch_at_two_sizes(panoptic, coco_images, fmt):
    cfg, model = panoptic
    adapter = PanopticFPNAdapter(model)
    data = export_model(adapter, coco_images[0], fmt)
    if fmt == "onnx":
        graph = onnx.load_from_string(data).graph
        assert [o.name for o in graph.output] == list(adapter.OUTPUT_NAMES)
        ops = _ops(graph)
        assert {"RoiAlign", "NonMaxSuppression"} <= ops and not ops & {"PythonOp", "ATen"}, ops
    else:
        assert isinstance(torch.jit.load(io.BytesIO(data)), torch.jit.ScriptModule)
    checks = verify_export(adapter, data, fmt, coco_images, CombineSettings.from_config(cfg))
    assert [c["size"] for c in checks] == SIZES
    for c in checks:
        assert c["detections"] == cfg.TEST.DETECTIONS_PER_IMAGE and c["same_detections"] == 1, c
        assert c["boxes_max_abs"] <= 1e-3 and c["scores_max_abs"] <= 1e-5, c  # pixels, [0, 1]
        assert c["masks_max_abs"] <= 1e-5 and c["sem_seg_rel_to_range"] <= 1e-4, c
        # a pasted mask pixel within float error of the 0.5 threshold may flip
        assert c["panoptic_agreement"] >= 0.9999 and c["same_segments"] == 1.0, c


@pytest.mark.slow
def test_export_tool_exports_a_panoptic_fpn_whole_or_its_semantic_branch(panoptic, synthetic_root,
                                                                        tmp_path):
    _, model = panoptic
    weights = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    sample = sorted(glob.glob(str(synthetic_root / "coco" / "val2017" / "*.jpg")))[0]
    common = ["--config-file", PANOPTIC_TINY, "--sample-image", sample, "--format", "torchscript"]
    opts = ["MODEL.WEIGHTS", weights, *DETECT_ALL]
    whole = call_main("tools/export_model.py", *common, "--output", tmp_path / "p.ts", *opts)
    assert whole.returncode == 0, whole.stderr
    assert "PanopticFPNAdapter" in whole.stdout and "height and width dynamic" in whole.stdout
    checks = [line for line in whole.stdout.splitlines() if "vs PyTorch at" in line]
    assert len(checks) == 2 and all("same_segments 1" in c for c in checks), whole.stdout
    semantic = call_main("tools/export_model.py", *common, "--semantic-only", "--output",
                         tmp_path / "s.ts", *opts)
    assert semantic.returncode == 0 and "SemanticSegmentationAdapter" in semantic.stdout
    refused = call_main("tools/export_model.py", *common, "--labels", "--output",
                        tmp_path / "l.ts", *opts)
    assert refused.returncode == 2 and "--labels applies to a semantic output" in refused.stderr
    assert not (tmp_path / "l.ts").exists()
    other = call_main("tools/export_model.py", *common, "--output", tmp_path / "c.ts", *opts,
                      "MODEL.ROI_HEADS.NAME", "CascadeROIHeads")
    assert other.returncode == 2 and other.stderr.startswith("error: ") and \
        "MODEL.ROI_HEADS.NAME='CascadeROIHeads'" in other.stderr, other.stderr
    assert "Traceback" not in other.stderr and not (tmp_path / "c.ts").exists()
