"""tools/benchmark.py --quick writes complete JSON and markdown reports (no timing assertions).

The report is written in two runs, ``--only rse heads`` then ``--only deploy`` into the same
file, so the tests also check that a section run keeps the sections it does not measure."""
import json

import pytest
from support.tools import assert_clear_error, run_script
from support.run_once import run_once

from rsp_d2.layers.rse_cpp import HAS_CPP_EXT

pytestmark = pytest.mark.slow  # two runs of the tool


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    def build(directory):
        out = directory / "benchmarks.json"
        for sections in (["rse", "heads"], ["deploy"]):
            proc = run_script("tools/benchmark.py", "--quick", "--device", "cpu", "--out", out,
                            "--only", *sections)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        return json.loads(out.read_text()), out.with_suffix(".md").read_text()

    return tuple(run_once(tmp_path_factory, "quick_benchmark", build))


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
            # again with glibc's mmap threshold fixed: freed memory returned at once
            assert row["memory_freed_returned"].get("peak_extra_mb", -1) >= 0, row
            for mem in (row["memory"], row["memory_freed_returned"]):  # the median of 3
                assert len(mem["samples_mb"]) == 3
                assert mem["peak_extra_mb"] == sorted(mem["samples_mb"])[1], mem
    memory_targets = [t["name"] for t in results["targets"] if "peak extra memory /" in t["name"]]
    assert len(memory_targets) == 2 and "freed memory returned" in memory_targets[1]
    # RSP-4's relation share, timed again under the profiler where memory is measured
    for row in results["heads"]:
        share = row["relation_share"]
        if row["head"] == "rsp4" and row["rse_impl"] == auto and row["threads"] == threads:
            assert 0 < share["share"] < 1 and 0 < share["relation_ms"] < share["call_ms"], row
        else:
            assert share is None, row
    speed_targets = [t["name"] for t in results["targets"] if "share of its time" in t["name"]
                     or "training step / Semantic FPN" in t["name"]]
    assert len(speed_targets) == 3, speed_targets
    assert len(results["targets"]) == 4 + (threads > 1) + 2 + 3 + 6  # + 2 per deploy setting
    # every section says when and under which load it was measured: two separate runs
    assert set(results["runs"]) == {"rse", "heads", "deploy"}
    assert results["runs"]["rse"]["date"] <= results["runs"]["deploy"]["date"]


def test_deploy_rows_time_both_runtimes_on_a_verified_graph(quick_report):
    results, _ = quick_report
    auto = results["auto_impl"]
    rows = [(r["what"], r["head"], r["runtime"], r["rse_impl"]) for r in results["deploy"]]
    assert rows == [(what, head, runtime, impl) for what in ("head", "model", "panoptic")
                    for head, runtime, impl in [
                        ("semantic_fpn", "pytorch", "-"), ("semantic_fpn", "onnxruntime", "-"),
                        ("rsp4", "pytorch", auto), ("rsp4", "onnxruntime", "export")]]
    for row in results["deploy"]:
        assert row["time"]["median_ms"] > 0 and row["onnx_mb"] > 0
        # the timed ONNX graph computes what PyTorch does (random weights, tiny input)
        assert row["check"]["rel_to_range"] <= 1e-4, row
        assert row["check"]["agreement"] >= 0.999, row  # argmax, or panoptic segment ids
        if row["what"] == "panoptic":  # every detection of the graph, as PyTorch's
            assert row["check"]["same_detections"] == 1.0 and row["check"]["detections"] > 0, row
        if row["runtime"] == "pytorch":
            assert row["vs_pytorch"] == 1.0
        if row["head"] == "semantic_fpn":
            assert row["vs_semantic_fpn"] == 1.0


def test_markdown_has_every_row(quick_report):
    results, md = quick_report
    assert results["machine"]["cpu"] in md and "Load average" in md
    # the CPU's vector extensions and the relation's loops, which decide the kernels' speed
    assert results["machine"]["cpu_isa"] in md
    assert f"runs its {results['machine']['rse_cpp_loops']!r} loops" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    # header + rows, for the RSE, heads and deployment tables
    assert len(table_rows) == 3 + len(results["rse"]) + len(results["heads"]) + len(results["deploy"])
    for row in results["heads"]:
        assert f"| {row['setting']} | {row['label']} | {row['rse_impl']} |" in md
    assert md.count("**met**") + md.count("**NOT met**") == len(results["targets"])
    assert md.count("Measured ") == 3  # each section's own date and load


def test_bfloat16_cases_run_in_bfloat16():
    # --dtype bfloat16: the heads under autocast (their convolutions in bfloat16), the relation
    # on bfloat16 inputs; float32 otherwise.
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from rsp_d2.analysis.benchmark_cases import build_case

    class ConvDtypes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket == torch.ops.aten.convolution:
                self.dtypes.add(out.dtype)
            return out

    for dtype in ("float32", "bfloat16"):
        for mode in ("inference", "train"):
            run = build_case(dict(kind="head", head="rsp4", impl="auto", n=1, height=64,
                                  width=64, mode=mode, dtype=dtype))
            with ConvDtypes() as seen:
                run()
            assert seen.dtypes == {getattr(torch, dtype)}, (dtype, mode, seen.dtypes)
    run = build_case(dict(kind="rse", impl="auto", n=1, m=4, c=8, h=6, w=7, k=3, mode="fwdbwd",
                          dtype="bfloat16"))
    run()  # bfloat16 inputs through impl="auto", forward and backward


def test_bfloat16_refuses_the_deploy_section(tmp_path):
    proc = run_script("tools/benchmark.py", "--quick", "--device", "cpu", "--dtype", "bfloat16",
                      "--only", "deploy", "--out", tmp_path / "b.json")
    assert_clear_error(proc, "--only deploy with --dtype bfloat16", "float32 ONNX")
    assert not (tmp_path / "b.json").exists()


def test_memory_targets_compare_even_a_zero_peak():
    """RSP-4's inference memory against Semantic FPN's, by both methods; a baseline that peaked
    at 0 MiB (tiny --quick shapes) gives no ratio but still a comparison (it once dropped the
    target on one stack)."""
    from rsp_d2.analysis.benchmark_targets import memory_targets

    def row(head, default, returned):
        return dict(head=head, rse_impl="cpp" if head == "rsp4" else "-",
                    memory={"peak_extra_mb": default},
                    memory_freed_returned={"peak_extra_mb": returned})

    targets = memory_targets([row("semantic_fpn", 208.0, 0.0), row("rsp4", 260.0, 0.0)], "cpp")
    assert [(t["value"], t["met"]) for t in targets] == [(1.25, False), (None, True)]
    targets = memory_targets([row("semantic_fpn", 200.0, 100.0), row("rsp4", 100.0, 150.0)], "cpp")
    assert [(t["value"], t["met"]) for t in targets] == [(0.5, True), (1.5, False)]


def test_bfloat16_targets_come_from_one_run_of_both_dtypes():
    """A bfloat16 run's targets: RSP-4's bfloat16 speed-up over its float32 time against
    Semantic FPN's, and its bfloat16 time against Semantic FPN's in bfloat16; marked
    unmeasured, never met, where the heads' machine has no native bfloat16 (read from the
    machine the heads were measured on, which a report keeps beside them)."""
    from rsp_d2.analysis.benchmark_targets import has_native_bfloat16, speed_targets

    def row(head, dtype, ms):
        setting = f"inference 1024x2048, batch 1, 2 threads, {dtype}"
        return dict(setting=setting, mode="inference", threads=2, dtype=dtype, head=head,
                    device="cpu", rse_impl="cpp" if head == "rsp4" else "-",
                    time={"median_ms": ms}, relation_share=None,
                    vs_semantic_fpn=round(ms / {"float32": 1000.0, "bfloat16": 600.0}[dtype], 3))

    rows = [row("semantic_fpn", "float32", 1000.0), row("rsp4", "float32", 800.0),
            row("semantic_fpn", "bfloat16", 600.0), row("rsp4", "bfloat16", 480.0)]
    gain, ratio = speed_targets(rows, "cpp", native_bf16=True)
    assert (gain["value"], gain["target"], gain["met"]) == (1.667, ">= 1.667", True)
    assert (ratio["value"], ratio["met"]) == (0.8, True)
    gain, ratio = speed_targets(rows, "cpp", native_bf16=False)
    assert not gain["met"] and not ratio["met"] and "no native bfloat16" in gain["name"]
    # the machine sections' ISA line: what the CPU has, then what it lacks
    assert has_native_bfloat16("AVX512-BF16, AVX-512F, AVX2, FMA; no AMX-BF16")
    assert not has_native_bfloat16("AVX2, FMA; no AMX-BF16, AVX512-BF16, AVX-512F")
    assert has_native_bfloat16("unknown (aarch64)", device="cuda")


def test_relation_share_only_where_it_can_be_attributed():
    """The relation's share of a head call: for cpp (one autograd node of its own) forward and
    backward; for export, whose backward is many ordinary nodes, only without autograd; none
    for a head without relation."""
    from rsp_d2.analysis.benchmark import relation_share

    def case(head, impl, mode):
        return dict(kind="head", head=head, impl=impl, mode=mode, n=1, height=64, width=128)

    for mode in ("inference", "train"):
        share = relation_share(case("rsp4", "chunked", mode))
        assert 0 < share["share"] < 1 and share["relation_ms"] < share["call_ms"], share
    assert relation_share(case("rsp4", "export", "inference"))["share"] > 0
    assert relation_share(case("rsp4", "export", "train")) is None
    assert relation_share(case("semantic_fpn", "auto", "train")) is None
