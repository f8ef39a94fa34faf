"""The comparison's contrasts and its stopping rule (tools/compare_heads.py --contrast,
--precision, --max-seeds; rsp_d2/analysis/compare_report.py), on runs laid out as finished
runs are: no training, the numbers are chosen so that the intervals are known exactly."""
import json
import math

import pytest
from scipy import stats

from rsp_d2.analysis.compare import Variant
from rsp_d2.analysis.compare_report import collect, more_seeds, parse_contrast
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
