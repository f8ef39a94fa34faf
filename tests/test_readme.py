"""The README's drop-in snippet works as written on Detectron2's own Panoptic FPN config."""
import os
import re

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _snippet(marker):
    text = open(os.path.join(REPO, "README.md")).read()
    m = re.search(re.escape(marker) + r"\s*```python\n(.*?)```", text, re.S)
    assert m, f"README has no python block after {marker}"
    return m.group(1)


def test_drop_in_snippet_builds_an_rsp_panoptic_fpn():
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    code = _snippet("<!-- drop-in -->")
    assert len([l for l in code.splitlines() if l.strip()]) == 3
    lines = code.splitlines()
    cfg = get_cfg()
    scope = {"cfg": cfg}
    exec("\n".join(lines[:2]), scope)
    # The user's own config, merged once the RSP keys exist:
    cfg.merge_from_file(model_zoo.get_config_file("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"))
    exec(lines[2], scope)
    cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE = "", "cpu"
    model = build_model(cfg).eval()
    assert type(model.sem_seg_head).__name__ == "RSPHead"
    assert [type(f).__name__ for f in model.sem_seg_head.fusions.values()] == [
        "SumFusion", "RelationalSemanticsPropagator", "RelationalSemanticsPropagator"]
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 200, 300) * 255}])[0]
    assert out["sem_seg"].shape == (54, 200, 300) and "panoptic_seg" in out
