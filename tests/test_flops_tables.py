"""`tools/analyze_head.py` reproduces the paper's head FLOPs and "# param." columns."""
import json
import os

import pytest
import torch
from support.run_once import run_once
from support.tools import call_main, run_script

from rsp_d2.analysis.flops import build_head_for_analysis, count_head
from rsp_d2.analysis.paper_tables import (
    FLOPS_TOLERANCE_G,
    PAPER_ROWS,
    PARAMS_TOLERANCE,
    params_as_paper,
)
from rsp_d2.config import load_config
from rsp_d2.layers.fusion import RelationalSemanticsExtractor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    def build(directory):
        out = directory / "tables.json"
        proc = call_main("tools/analyze_head.py", "--paper-tables", "--json", out)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(out.read_text()), proc.stdout

    return tuple(run_once(tmp_path_factory, "paper_tables", build))


@pytest.mark.slow
def test_every_table_row_is_reproduced(tables):
    rows, stdout = tables
    assert [(r["table"], r["model"]) for r in rows] == [(r.table, r.model) for r in PAPER_ROWS]
    for r in rows:
        tolerance = FLOPS_TOLERANCE_G if r["scope"] == "head" else 50.0  # 0.1 G or 0.1 T printed
        assert r["tolerance_g"] == tolerance
        if r["contradiction"] is None:
            assert abs(r["ours_flops_g"] - r["flops_g"]) <= tolerance, r
        else:
            # The note must be about a real discrepancy.
            assert abs(r["ours_flops_g"] - r["flops_g"]) > tolerance, r
        # "# param." is megabytes of float32 weights: 4 bytes times our parameter count.
        if r["params"] is not None:
            assert abs(params_as_paper(r["ours_params_m"]) - r["params"]) <= PARAMS_TOLERANCE + 1e-9, r
    for table in ("Table I", "Table II", "Table IV", "Table V(a)", "Table V(b)", "Table VI"):
        assert table in stdout
    assert "| RSP-4-D X101 | cityscapes/rsp4_D_X101.yaml | 0.8T | 0.858T | +0.058 (*) |" in stdout


def test_known_values_and_ratios(tables):
    rows = {(r["table"], r["model"]): r for r in tables[0]}
    rsp4 = rows[("I", "RSP-4 R50")]["ours_flops_g"]
    sfpn = rows[("I", "Semantic FPN R50")]["ours_flops_g"]
    # Sec. IV-B: RSP-2 "with ~15% fewer FLOPs" than Semantic FPN; RSP-4 at 0.86 of it.
    assert rows[("I", "RSP-2 R50")]["ours_flops_g"] / sfpn == pytest.approx(0.854, abs=0.005)
    assert rsp4 / sfpn == pytest.approx(0.859, abs=0.005)
    # The -D models cost what Table V(a)'s (3, 3) row and Table III say, not Table I.
    assert rows[("I", "RSP-2-D R101")]["ours_flops_g"] == pytest.approx(53.07, abs=0.01)
    assert rows[("I", "RSP-4-D R101")]["ours_flops_g"] == pytest.approx(53.35, abs=0.01)
    # Table II, whole models: the RSP-4-D head is the R101 row's head, on either backbone; the
    # ResNeXt-101 32x8d backbone and FPN cost 0.81T where ResNet-101's cost 0.44T.
    r101, x101 = rows[("II", "RSP-4-D R101")], rows[("II", "RSP-4-D X101")]
    assert r101["ours_flops_g"] == pytest.approx(488.8, abs=0.1)
    assert x101["ours_flops_g"] == pytest.approx(858.5, abs=0.1)
    assert x101["ours_params_m"] == pytest.approx(93.0, abs=0.1)
    assert rows[("II", "Semantic FPN R101")]["ours_flops_g"] == pytest.approx(497.6, abs=0.1)


@pytest.mark.slow
def test_single_config(tmp_path):
    out = tmp_path / "one.json"
    proc = run_script("tools/analyze_head.py", "--config-file", "configs/cityscapes/rsp2_R50.yaml",
                    "--input-size", "512", "1024", "--json", out)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    # A quarter of the pixels of 1024 x 2048; f_p's k*k*C*M per module does not scale.
    assert r["flops"] / 1e9 == pytest.approx((53.385 - 0.0008) / 4, abs=0.01)
    assert set(r["by_module"]) == {"q_convs", "fusions", "predictor"}
    assert "GFLOPs" in proc.stdout


@pytest.mark.slow
def test_whole_model_of_one_config(tmp_path):
    """The README's Table II command: backbone, FPN and head of the ResNeXt-101 RSP-4-D."""
    out = tmp_path / "x101.json"
    proc = call_main("tools/analyze_head.py", "--config-file", "configs/cityscapes/rsp4_D_X101.yaml",
                     "--whole-model", "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert set(r["by_module"]) == {"backbone", "head"}
    assert r["by_module"]["head"] / 1e9 == pytest.approx(53.35, abs=0.01)  # the R101 row's head
    assert r["flops"] == sum(r["by_module"].values())
    assert r["flops"] / 1e12 == pytest.approx(0.858, abs=0.001)
    assert "whole model 858." in proc.stdout


def test_whole_model_needs_a_config():
    proc = call_main("tools/analyze_head.py", "--paper-tables", "--whole-model")
    assert proc.returncode == 2 and "--whole-model counts the model of --config-file" in proc.stderr


# One head of each kind the paper tables count: plain, RSP k=7 x2 and x4, k=3 dilated, SELF,
# CONTEXT, d=1, four RSPs with Q6/Q7 (the coarsest grid), Semantic FPN.
# (config, how many RSEs with f_p it has, a size whose halves divide its coarsest grid)
SCALING_CONFIGS = [("baseline_R50.yaml", 0, 256), ("rsp2_R50.yaml", 2, 256),
                   ("rsp4_D_R101.yaml", 4, 512), ("semantic_fpn_R50.yaml", 0, 256),
                   ("ablations/t4_self.yaml", 2, 256), ("ablations/t4_context.yaml", 0, 256),
                   ("ablations/t5b_d1.yaml", 2, 256), ("ablations/t6_rsp_x4.yaml", 4, 512)]


@pytest.mark.parametrize("name,num_rse,height", SCALING_CONFIGS)
def test_count_is_affine_in_pixels(name, num_rse, height):
    """The paper tables trace at 1/16 and 1/64 of the pixels and extrapolate (shrink); that is
    exact: same integers as a direct trace, and the part that does not scale is f_p's
    k*k x C x C/d linear of each RSE."""
    cfg = load_config(os.path.join(REPO, "configs", "cityscapes", name))
    direct = count_head(cfg, height, 2 * height, shrink=1)
    assert count_head(cfg, height, 2 * height, shrink=2) == direct
    small, big = (count_head(cfg, h, 2 * h)["flops"] for h in (height // 4, height // 2))
    intercept = (4 * small - big) / 3
    head = build_head_for_analysis(cfg)[0]
    f_p = [m.kernel_size ** 2 * m.pos.in_features * m.pos.out_features for m in head.modules()
           if isinstance(m, RelationalSemanticsExtractor) and m.pos is not None]
    assert len(f_p) == num_rse and intercept == sum(f_p)


def test_shrink_needs_an_exact_grid():
    cfg = load_config(os.path.join(REPO, "configs", "cityscapes", "rsp2_R50.yaml"))
    with pytest.raises(ValueError, match="coarsest grid"):
        count_head(cfg, 200, 400, shrink=2)


def test_missing_config_is_named(tmp_path):
    proc = call_main("tools/analyze_head.py", "--config-file", "nope.yaml")
    assert proc.returncode == 2 and "config file not found: nope.yaml" in proc.stderr


# What the paper's tables count (rsp_d2/analysis/flops.py), under fvcore's operator names.
COUNTED_OPS = ("conv", "linear", "addmm", "matmul", "mm", "bmm", "einsum")


@pytest.mark.parametrize("impl", ["auto", "export"])
@pytest.mark.parametrize("window", [[], ["MODEL.SEM_SEG_HEAD.RSP.KERNEL_SIZE", "3",
                                          "MODEL.SEM_SEG_HEAD.RSP.DILATION", "3",
                                          "MODEL.SEM_SEG_HEAD.RSP.NUM_HEADS", "2"]],
                         ids=["k7", "k3d3g2"])
def test_detectron2_flop_counter_counts_the_definition(impl, window):
    """Detectron2's FlopCountAnalysis (what its tools/analyze_model.py --tasks flop runs, over
    fvcore's default handles) counts the RSP head's multiply-adds as tools/analyze_head.py
    does, whichever implementation the config names: the relation's k*k*(M + C) per pixel,
    not the k*k-fold halo of the export form that tracing would otherwise record."""
    from detectron2.modeling import build_model
    from detectron2.utils.analysis import FlopCountAnalysis

    cfg = load_config(os.path.join(REPO, "tests", "configs", "rsp4_R18_tiny.yaml"),
                      ["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.RSP.IMPL", impl, *window])
    model = build_model(cfg).eval()
    image = torch.rand(3, 256, 512) * 255
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, [{"image": image}]).unsupported_ops_warnings(False)
        ops = analysis.by_module_and_operator()["model.sem_seg_head"]
    counted = sum(v for op, v in ops.items() if op in COUNTED_OPS)
    assert counted == count_head(cfg, 256, 512, shrink=1)["flops"], ops
