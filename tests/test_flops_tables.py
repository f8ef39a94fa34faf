"""`tools/analyze_head.py` reproduces the paper's head FLOPs and "# param." columns."""
import json
import os
import subprocess
import sys

import pytest

from rsp_d2.analysis.paper_tables import (
    FLOPS_TOLERANCE_G,
    PAPER_ROWS,
    PARAMS_TOLERANCE,
    params_as_paper,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    out = tmp_path_factory.mktemp("flops") / "tables.json"
    proc = subprocess.run([sys.executable, "tools/analyze_head.py", "--paper-tables", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_every_table_row_is_reproduced(tables):
    rows, stdout = tables
    assert [(r["table"], r["model"]) for r in rows] == [(r.table, r.model) for r in PAPER_ROWS]
    for r in rows:
        if r["contradiction"] is None:
            assert abs(r["ours_flops_g"] - r["flops_g"]) <= FLOPS_TOLERANCE_G, r
        else:
            # The paper contradicts itself there: the note must be about a real discrepancy.
            assert abs(r["ours_flops_g"] - r["flops_g"]) > FLOPS_TOLERANCE_G, r
        # "# param." is megabytes of float32 weights: 4 bytes times our parameter count.
        assert abs(params_as_paper(r["ours_params_m"]) - r["params"]) <= PARAMS_TOLERANCE + 1e-9, r
    for table in ("Table I", "Table IV", "Table V(a)", "Table V(b)", "Table VI"):
        assert table in stdout


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


def test_single_config(tmp_path):
    out = tmp_path / "one.json"
    proc = subprocess.run([sys.executable, "tools/analyze_head.py", "--config-file",
                           "configs/cityscapes/rsp2_R50.yaml", "--input-size", "512", "1024",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    # A quarter of the pixels of 1024 x 2048; f_p's k*k*C*M per module does not scale.
    assert r["flops"] / 1e9 == pytest.approx((53.385 - 0.0008) / 4, abs=0.01)
    assert set(r["by_module"]) == {"q_convs", "fusions", "predictor"}
    assert "GFLOPs" in proc.stdout


def test_missing_config_is_named(tmp_path):
    proc = subprocess.run([sys.executable, "tools/analyze_head.py", "--config-file", "nope.yaml"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0 and "config file not found: nope.yaml" in proc.stderr
