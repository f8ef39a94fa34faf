"""The comparison's contrasts and its stopping rule (tools/compare_heads.py --contrast,
--precision, --max-seeds; rsp_d2/analysis/compare_report.py), on runs laid out as finished
runs are: no training, the numbers are chosen so that the intervals are known exactly."""
import io
import json
import math

import pytest
from PIL import Image
from scipy import stats

from rsp_d2.analysis.compare import Variant
from rsp_d2.analysis.compare_presets import PRESETS, preset_variants
from rsp_d2.analysis.compare_report import (collect, markdown_table, more_seeds, parse_contrast,
                                            plot_report, reading)
from rsp_d2.analysis.paper_tables import PAPER_ROWS, paper_miou
from rsp_d2.utils.errors import InputError
from rsp_d2.utils.machine import cpu_model
from support.compare_runs import CPU, finished_run
from support.tools import call_main
from support.train_net import REPO, SEMANTIC_TINY

SUM = ["MODEL.SEM_SEG_HEAD.RSP.FUSION", "['sum','sum','sum','sum','sum']"]


@pytest.fixture
def variants():
    return [Variant("rsp4", str(REPO / SEMANTIC_TINY)), Variant("sum", str(REPO / SEMANTIC_TINY),
                                                               list(SUM))]


def test_contrast_interval_and_the_stopping_rule(variants, tmp_path):
    rsp4, base = variants
    diffs = [1.0, 3.0, 2.0]
    for seed, d in enumerate(diffs):
        finished_run(tmp_path, base, seed, 50.0 + seed, band=40.0)
        finished_run(tmp_path, rsp4, seed, 50.0 + seed + d, band=40.0 + 2 * d)
    report = collect(variants, [0, 1, 2], str(tmp_path), contrasts=[("rsp4", "sum")],
                     precision=1.0)
    (c,) = report["contrasts"]
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sd of the differences is 1.0
    assert (c["a"], c["b"], c["n"]) == ("rsp4", "sum", 3)
    assert c["mean"] == pytest.approx(2.0) and c["half_width"] == pytest.approx(half)
    assert c["reached"] is False  # +-2.48 is wider than +-1.0
    assert c["band"]["n"] == 3 and c["band"]["mean"] == pytest.approx(4.0)
    assert report["cpu"] == CPU and report["root"] == str(tmp_path)
    assert more_seeds(report, [0, 1, 2], max_seeds=10) == [0, 1, 2, 3]
    assert more_seeds(report, [0, 1, 2], max_seeds=3) is None  # the maximum ends it

    precise = collect(variants, [0, 1, 2], str(tmp_path), contrasts=[("rsp4", "sum")],
                      precision=3.0)
    assert precise["contrasts"][0]["reached"] is True
    assert more_seeds(precise, [0, 1, 2], max_seeds=10) is None


def test_runs_of_two_cpu_models_are_not_compared(variants, tmp_path):
    rsp4, base = variants
    finished_run(tmp_path, base, 0, 50.0, cpu="AMD EPYC")
    finished_run(tmp_path, rsp4, 0, 51.0, cpu="Intel Xeon")
    with pytest.raises(InputError, match="the runs come from 2 CPU models"):
        collect(variants, [0], str(tmp_path))


def _cpuinfo(family, model, flags):
    cpu = (f"processor\t: {{i}}\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\n"
           f"model\t\t: {model}\nmodel name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: {flags}\n")
    return "\n".join(cpu.format(i=i) for i in range(2))


def test_cpu_identity_tells_two_epyc_generations_apart():
    """Two virtual machines that both say "AMD EPYC" (an AVX2 one and an AVX-512 one) are two
    CPU types for the pairing rule."""
    avx2 = cpu_model(_cpuinfo(23, 49, "fpu sse2 avx fma avx2"))
    avx512 = cpu_model(_cpuinfo(26, 2, "fpu sse2 avx fma avx2 avx512f avx512_bf16"))
    assert avx2 == "AMD EPYC (family 23, model 49, stepping 1; AVX2, FMA)"
    assert avx512 == "AMD EPYC (family 26, model 2, stepping 1; AVX512-BF16, AVX-512F, AVX2, FMA)"
    # no /proc/cpuinfo fields (another OS): the processor name alone, no identity to add
    assert "(" not in cpu_model("")


@pytest.mark.parametrize("text", ["rsp4", "rsp4:", ":sum", "a:b:c"])
def test_contrast_syntax(text):
    with pytest.raises(InputError, match="expected A:B"):
        parse_contrast(text)


def test_tool_stops_at_max_seeds_and_says_so(tmp_path):
    """Finished runs are skipped; with the interval still too wide at --max-seeds the tool
    trains nothing more and the table says the precision was not reached."""
    out = tmp_path / "cmp"
    rsp4 = Variant("rsp4", SEMANTIC_TINY)
    base = Variant("sum", SEMANTIC_TINY, list(SUM))
    for seed, d in enumerate([0.0, 4.0]):
        finished_run(out, base, seed, 50.0)
        finished_run(out, rsp4, seed, 50.0 + d)
    proc = call_main("tools/compare_heads.py", "--variant", "rsp4", SEMANTIC_TINY, "--variant",
                     "sum", SEMANTIC_TINY, *SUM, "--seeds", 0, 1, "--output", out,
                     "--relation-images", 0, "--contrast", "rsp4:sum", "--precision", 1.0,
                     "--max-seeds", 2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[run]" not in proc.stdout and "[more seeds]" not in proc.stdout
    table = (out / "comparison.md").read_text()
    assert table.startswith(f"Runs made on: {CPU}\n")
    assert "| rsp4 − sum | 2 | +2.0 ± 25.4 | [-23.4, 27.4] | 1/0 | no | – |" in table
    with open(out / "comparison.json") as f:
        report = json.load(f)
    assert report["precision"] == 1.0 and report["max_seeds"] == 2
    assert report["variants"]["sum"]["config_file"] == SEMANTIC_TINY  # relative to the repo


def test_contrasts_are_read_against_the_papers_difference(tmp_path):
    """A variant that stands for a paper row carries its Cityscapes mIoU; each contrast gets the
    paper's difference, whether its interval holds it and excludes 0, and a reading in words;
    the plot gains a panel of the paired differences."""
    rsp4 = Variant("rsp4", str(REPO / SEMANTIC_TINY), paper="cityscapes/rsp4_R50.yaml")
    p2p7 = Variant("sum_p2p7", str(REPO / SEMANTIC_TINY), list(SUM),
                   paper="cityscapes/ablations/t6_q6q7.yaml")
    same = Variant("same", str(REPO / SEMANTIC_TINY), list(SUM), paper="cityscapes/rsp4_R50.yaml")
    for seed, d in enumerate([1.0, 2.0, 3.0, 2.0]):
        finished_run(tmp_path, p2p7, seed, 50.0 + seed)
        finished_run(tmp_path, rsp4, seed, 50.0 + seed + d)  # +2.0 [+0.7, +3.3]
        finished_run(tmp_path, same, seed, 50.0 + seed + d + (0.1 if seed % 2 else -0.1))
    report = collect([rsp4, p2p7, same], [0, 1, 2, 3], str(tmp_path),
                     contrasts=[("rsp4", "sum_p2p7"), ("same", "rsp4")], precision=1.0)
    assert report["variants"]["rsp4"]["paper"] == {"table": "I", "model": "RSP-4 R50",
                                                   "mIoU": 77.5}
    assert report["variants"]["sum_p2p7"]["paper"]["mIoU"] == 76.0  # Table VI's "+Q6, Q7"
    ahead, level = report["contrasts"]
    assert ahead["paper"] == {"difference": 1.5, "tables": "I, VI", "inside_ci": True}
    assert ahead["excludes_zero"] is True
    assert reading(ahead) == "rsp4 ahead; the paper's +1.5 (Cityscapes) inside"
    assert level["excludes_zero"] is False and level["paper"]["difference"] == 0.0
    assert reading(level) == "undecided: the interval holds 0 and the paper's +0.0 (Cityscapes)"
    ruled_out = dict(level, paper=dict(level["paper"], difference=1.5, inside_ci=False))
    assert reading(ruled_out) == ("no difference shown; the paper's +1.5 (Cityscapes) above the "
                                  "interval")
    behind = dict(ahead, mean=-2.0, ci_low=-3.3, ci_high=-0.7,
                  paper=dict(ahead["paper"], inside_ci=False))
    assert reading(behind) == "sum_p2p7 ahead; the paper's +1.5 (Cityscapes) above the interval"
    below = dict(ahead, paper=dict(ahead["paper"], difference=0.2, inside_ci=False))
    assert reading(below) == "rsp4 ahead; the paper's +0.2 (Cityscapes) below the interval"
    table = markdown_table(report)
    assert "| +1.5 (I, VI) | rsp4 ahead; the paper's +1.5 (Cityscapes) inside |" in table
    one = collect([rsp4, p2p7], [0], str(tmp_path), contrasts=[("rsp4", "sum_p2p7")])
    assert reading(one["contrasts"][0]) == "too few seeds"
    assert one["contrasts"][0]["paper"]["inside_ci"] is None  # no interval, nothing inside it
    with_contrasts = Image.open(io.BytesIO(plot_report(report)))
    without = Image.open(io.BytesIO(plot_report(dict(report, contrasts=[]))))
    assert with_contrasts.height == 2 * without.height


def test_paper_miou_rows_match_the_papers_own_differences():
    """Tables IV and VI print each row's gain over the baseline, "+0.4" for 75.2: the mIoU
    transcribed for each row must give those gains, and every preset variant names a row."""
    printed = {("IV", "+RSP x1 (RSP 54, Sum 43)"): 0.4, ("IV", "+RSP x1 (RSP 43, Sum 54)"): 0.8,
               ("IV", "+RSP x2 (54, 43)"): 1.3, ("IV", "+SELF x2"): 0.7,
               ("IV", "+CONTEXT x2"): 0.4, ("VI", "+Q6, Q7"): 1.2, ("VI", "+RSP x1 (43)"): 1.5,
               ("VI", "+RSP x1 (76)"): 1.4, ("VI", "+RSP x2 (54, 43)"): 1.6,
               ("VI", "+RSP x2 (76, 65)"): 2.1, ("VI", "+RSP x3 (65, 54, 43)"): 2.3,
               ("VI", "+RSP x3 (76, 65, 54)"): 2.4, ("VI", "+RSP x4 (76, 65, 54, 43)"): 2.7}
    rows = {(r.table, r.model): r for r in PAPER_ROWS}
    for (table, model), gain in printed.items():
        assert rows[(table, model)].miou - rows[(table, "BASELINE")].miou == pytest.approx(gain)
    for preset in PRESETS:
        for v in preset_variants(preset):
            assert paper_miou(v.paper) is not None, (preset, v.name, v.paper)
    assert paper_miou("cityscapes/rsp4_R50.yaml").table == "I"
    assert paper_miou("no/such.yaml") is None
