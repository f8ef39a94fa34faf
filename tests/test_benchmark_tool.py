"""tools/benchmark.py --quick writes complete JSON and markdown reports (no timing assertions)."""
import json
import os
import subprocess
import sys

import pytest

from rsp_d2.layers.rse_cpp import HAS_CPP_EXT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "benchmarks.json"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "benchmark.py"), "--quick",
                           "--device", "cpu", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_json_has_every_row(quick_report):
    results, _ = quick_report
    assert results["machine"]["cpu"] and results["machine"]["torch_threads"] >= 1
    auto = "cpp" if HAS_CPP_EXT else "chunked"
    assert results["auto_impl"] == auto
    # Two shapes x the impls runnable on CPU, each timed and measured forward and fwd+bwd.
    impls = {r["impl"] for r in results["rse"]}
    assert impls == {auto, "chunked", "export", "reference"} and len(results["rse"]) == 2 * len(impls)
    for row in results["rse"]:
        for mode in ("fwd", "fwdbwd"):
            assert row[mode]["median_ms"] > 0 and row[mode]["repeats"] == 1
            assert row[f"{mode}_memory"].get("peak_extra_mb", -1) >= 0, row[f"{mode}_memory"]
        assert set(row["speedup_vs_reference"]) == {"fwd", "fwdbwd"}
    threads = results["machine"]["torch_threads"]
    heads = [(r["mode"], r["threads"], r["head"], r["rse_impl"]) for r in results["heads"]]
    compared = [("semantic_fpn", "-"), ("baseline", "-"), ("rsp2", auto), ("rsp4", auto)]
    fallbacks = [("rsp4", "chunked")] if auto != "chunked" else []
    expected = [("inference", threads, *h) for h in compared + fallbacks + [("rsp4", "reference")]]
    expected += [("train", threads, *h) for h in compared]
    if threads > 1:  # inference again with one thread
        expected += [("inference", 1, *h) for h in compared]
    assert heads == expected
    for row in results["heads"]:
        assert row["time"]["median_ms"] > 0 and row["vs_semantic_fpn"] > 0
        if row["threads"] == threads:
            assert row["memory"].get("peak_extra_mb", -1) >= 0, row["memory"]
    assert len(results["targets"]) == 4 + (threads > 1)


def test_markdown_has_every_row(quick_report):
    results, md = quick_report
    assert results["machine"]["cpu"] in md and "Load average" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    # header + rows, for the RSE table and the heads table
    assert len(table_rows) == 2 + len(results["rse"]) + len(results["heads"])
    for row in results["heads"]:
        assert f"| {row['setting']} | {row['label']} | {row['rse_impl']} |" in md
    assert md.count("**met**") + md.count("**NOT met**") == len(results["targets"])
