#!/usr/bin/env python
"""Speed and memory of the RSE implementations and of whole heads (the project's benchmark).

    python tools/benchmark.py                 # full run (about 12 minutes on a 2-core CPU)
    python tools/benchmark.py --quick         # smoke run: small shapes, 1 repeat
    python tools/benchmark.py --only deploy   # one section; the others are kept from --out

Writes --out (JSON, default docs/benchmarks.json) and the markdown table next to it
(docs/benchmarks.md), creating their folder. The arguments and both paths are checked before
anything is measured. Measurement helpers: rsp_d2/analysis/benchmark.py; cases:
rsp_d2/analysis/benchmark_cases.py.
"""
import argparse
import datetime
import json
import os
import sys

import torch

from rsp_d2.analysis.benchmark import (
    DEVICES, check_settings, load_average, machine_info, peak_extra_memory_mb, relation_share,
    report_paths, summarize_times, time_run)
from rsp_d2.analysis.benchmark_cases import build_case
from rsp_d2.analysis.benchmark_deploy import RUNTIMES, build_deploy_pair
from rsp_d2.analysis.benchmark_report import render_markdown
from rsp_d2.analysis.benchmark_targets import deploy_targets, has_native_bfloat16, targets
from rsp_d2.layers import available_rse_impls, rse_impl_names
from rsp_d2.utils.errors import InputError, exit_with_error
from rsp_d2.utils.file_io import write_bytes_atomic, write_json_atomic

HEAD_LABELS = {"semantic_fpn": "Semantic FPN", "baseline": "baseline (sum)", "rsp2": "RSP-2",
               "rsp4": "RSP-4"}
# A case whose warm-up call takes longer than this gets only 3 timed repeats.
SLOW_CASE_S = 3.0
# Fresh processes per head's peak memory (the median is reported): the heap glibc keeps
# differs between processes by a few MiB, as much as the heads may differ.
HEAD_MEMORY_SAMPLES = 3
SECTIONS = ("rse", "heads", "deploy")
DTYPES = ("float32", "bfloat16")
# A COCO image at Detectron2's test size (shorter side 800), the Panoptic FPNs' input.
PANOPTIC_SIZE = (800, 1216)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=None, help="JSON output; the .md goes next to it (default: "
                   "docs/benchmarks.json, docs/benchmarks_bfloat16.json with --dtype bfloat16)")
    p.add_argument("--quick", action="store_true", help="small shapes, 1 repeat (smoke test)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per case (median reported)")
    p.add_argument("--train-batch", type=int, default=1, help="batch of the head training step")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help=f"one of {', '.join(DEVICES)} (default: cuda where visible)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=None,
                   help="measure these sections; the others are kept from an existing --out "
                   "(default: all; rse and heads with --dtype bfloat16)")
    p.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="bfloat16: the heads under torch.autocast, the relation on bfloat16 inputs")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = "docs/benchmarks.json" if args.dtype == "float32" else f"docs/benchmarks_{args.dtype}.json"
    if args.only is None:
        args.only = list(SECTIONS) if args.dtype == "float32" else ["rse", "heads"]
    return args


def interleaved(runs, repeats, device):
    """[timing summary] of zero-argument `runs` compared with each other: one untimed warm-up
    call each, then their timed calls round-robin, so that a change in the machine's load hits
    all of them."""
    times, counts = [], []
    for run in runs:
        warm = time_run(run, 1, warmup=0, device=device)[0]
        times.append([])
        counts.append(repeats if warm < SLOW_CASE_S else min(repeats, 3))
    for i in range(max(counts)):
        for run, ts, n in zip(runs, times, counts):
            if i < n:
                ts += time_run(run, 1, warmup=0, device=device)
    return [summarize_times(ts) for ts in times]


def measure_group(cases, repeats, device, memory=True, memory_samples=1):
    """[(timing summary, peak memory or {})] for benchmark cases compared with each other;
    the memory is the median of `memory_samples` fresh processes."""
    timings = interleaved([build_case(case) for case in cases], repeats, device)
    return [(t, peak_extra_memory_mb(case, samples=memory_samples) if memory else {})
            for t, case in zip(timings, cases)]


def freed_returned_memory(cases, device, samples=1):
    """Peak memory of each case with freed memory returned at once (CPU only, else {})."""
    if device != "cpu":
        return [{} for _ in cases]
    return [peak_extra_memory_mb(case, freed_returned=True, samples=samples) for case in cases]


def rse_rows(args, device, impls):
    if args.quick:
        shapes = [("tiny", dict(n=1, m=8, c=16, h=16, w=32)),
                  ("tiny batch", dict(n=2, m=8, c=16, h=8, w=16))]
    else:
        shapes = [("1/8 of 1024x2048", dict(n=1, m=64, c=128, h=128, w=256)),
                  ("512x1024 crop, batch 4", dict(n=4, m=64, c=128, h=64, w=128))]
    rows = []
    for label, shape in shapes:
        by_impl = {impl: dict(shape=label, impl=impl, k=7, **shape) for impl in impls}
        for mode in ("fwd", "fwdbwd"):
            cases = [dict(kind="rse", impl=impl, mode=mode, k=7, device=device,
                          dtype=args.dtype, **shape) for impl in impls]
            for impl, (t, mem) in zip(impls, measure_group(cases, args.repeats, device)):
                by_impl[impl][mode], by_impl[impl][f"{mode}_memory"] = t, mem
                print(f"rse {label} {impl} {mode}: {t['median_ms']} ms, {mem}", flush=True)
        rows += by_impl.values()
        ref = by_impl.get("reference")
        for row in by_impl.values():
            if ref is None:
                continue
            row["speedup_vs_reference"] = {
                m: round(ref[m]["median_ms"] / row[m]["median_ms"], 2) for m in ("fwd", "fwdbwd")}
            row["memory_vs_reference"] = {
                m: (round(row[f"{m}_memory"]["peak_extra_mb"] / ref[f"{m}_memory"]["peak_extra_mb"], 4)
                    if "peak_extra_mb" in row[f"{m}_memory"] and "peak_extra_mb" in ref[f"{m}_memory"]
                    and ref[f"{m}_memory"]["peak_extra_mb"] > 0 else None)
                for m in ("fwd", "fwdbwd")}
    return rows


def head_rows(args, device, auto_impl, impls):
    size_inf, size_train = ((64, 128), (64, 128)) if args.quick else ((1024, 2048), (512, 1024))
    threads = torch.get_num_threads()
    # (mode, batch, size, intra-op threads, with impl="reference"). Inference is measured again
    # single-threaded: on a loaded machine every OpenMP region waits for a descheduled thread
    # (~30 ms), which penalizes heads with many small ops; one thread shows the compute cost.
    settings = [("inference", 1, size_inf, threads, True),
                ("train", args.train_batch, size_train, threads, False)]
    if threads > 1 and device == "cpu":
        settings.append(("inference", 1, size_inf, 1, False))
    # A bfloat16 run times every head in float32 too, interleaved: its speed-ups come from one run.
    dtypes = ["float32"] if args.dtype == "float32" else ["float32", args.dtype]
    rows = []
    for mode, n, (height, width), n_threads, with_reference in settings:
        what = "inference" if mode == "inference" else "training step"
        setting = f"{what} {height}x{width}, batch {n}, {n_threads} thread{'s' * (n_threads > 1)}"
        heads = [("semantic_fpn", "-"), ("baseline", "-"), ("rsp2", "auto"), ("rsp4", "auto")]
        if with_reference and args.dtype == "float32":
            # The pure-PyTorch fallback (used where the C++ extension is not built), then the
            # unfold definition.
            if auto_impl != "chunked" and "chunked" in impls:
                heads.append(("rsp4", "chunked"))
            heads.append(("rsp4", "reference"))
        runs = [(head, impl, dtype) for dtype in dtypes for head, impl in heads]
        cases = [dict(kind="head", head=head, impl="auto" if impl == "-" else impl, mode=mode,
                      n=n, height=height, width=width, device=device, dtype=dtype)
                 for head, impl, dtype in runs]
        torch.set_num_threads(n_threads)
        with_memory = n_threads == threads  # peak memory does not depend on the thread count
        try:
            measured = measure_group(cases, args.repeats, device, memory=with_memory,
                                     memory_samples=HEAD_MEMORY_SAMPLES)
            # where the relation's time goes, after the timed calls (the profiler slows a call)
            shares = [relation_share(case) if with_memory and head == "rsp4" and impl == "auto"
                      else None for (head, impl, _), case in zip(runs, cases)]
        finally:
            torch.set_num_threads(threads)
        returned = (freed_returned_memory(cases, device, HEAD_MEMORY_SAMPLES) if with_memory
                    else [{} for _ in cases])
        fpn_ms = {dtype: t["median_ms"] for (head, _, dtype), (t, _) in zip(runs, measured)
                  if head == "semantic_fpn"}
        for (head, impl, dtype), (t, mem), mem_returned, share in zip(runs, measured, returned,
                                                                      shares):
            rse_impl = "-" if impl == "-" else (auto_impl if impl == "auto" else impl)
            label = setting + (f", {dtype}" if len(dtypes) > 1 else "")
            rows.append(dict(setting=label, mode=mode, threads=n_threads, dtype=dtype, head=head,
                             label=HEAD_LABELS[head], rse_impl=rse_impl, time=t, memory=mem,
                             memory_freed_returned=mem_returned, relation_share=share,
                             vs_semantic_fpn=round(t["median_ms"] / fpn_ms[dtype], 3)))
            print(f"head {label} {head} ({rse_impl}): {t['median_ms']} ms, {mem}, "
                  f"freed returned {mem_returned}, relation {share}", flush=True)
    return rows


def deploy_rows(args, auto_impl):
    """Head alone, whole semantic model and whole Panoptic FPN, Semantic FPN and RSP-4, under
    PyTorch and onnxruntime with the same intra-op threads; the four runs of one kind
    interleaved."""
    sizes = {"head": (1024, 2048), "model": (1024, 2048), "panoptic": PANOPTIC_SIZE}
    threads = torch.get_num_threads()
    rows = []
    for what, (height, width) in sizes.items():
        if args.quick:
            height, width = 128, 256
        pairs = {head: build_deploy_pair(what, head, height, width, threads, quick=args.quick)
                 for head in ("semantic_fpn", "rsp4")}
        keys = [(head, runtime) for head in pairs for runtime in RUNTIMES]
        timings = dict(zip(keys, interleaved([pairs[h][r] for h, r in keys], args.repeats, "cpu")))
        for head, runtime in keys:
            t = timings[(head, runtime)]
            impl = "-" if head == "semantic_fpn" else (auto_impl if runtime == "pytorch" else "export")
            rows.append(dict(
                what=what, setting=f"{what} {height}x{width}, batch 1, {threads} threads",
                head=head, label=HEAD_LABELS[head], runtime=runtime, rse_impl=impl, time=t,
                vs_pytorch=round(t["median_ms"] / timings[(head, "pytorch")]["median_ms"], 3),
                vs_semantic_fpn=round(
                    t["median_ms"] / timings[("semantic_fpn", runtime)]["median_ms"], 3),
                check=pairs[head]["check"], onnx_mb=pairs[head]["onnx_mb"]))
            print(f"deploy {what} {head} {runtime}: {t['median_ms']} ms", flush=True)
        del pairs
    return rows


def _kept_sections(args):
    """The sections of an existing --out that this run does not measure (same --quick), so that
    `--only deploy` adds a section to docs/benchmarks.json without re-measuring the rest."""
    if set(args.only) == set(SECTIONS) or not os.path.isfile(args.out):
        return {}
    with open(args.out) as f:
        old = json.load(f)
    old_settings = old.get("settings", {})
    if (old_settings.get("quick") != args.quick
            or old_settings.get("dtype", "float32") != args.dtype):
        return {}
    kept = {s: old[s] for s in SECTIONS if s in old and s not in args.only}
    old_runs = old.get("runs", {})
    kept["runs"] = {s: old_runs.get(s, {k: old.get(k) for k in
                                        ("date", "machine", "load_average_start",
                                         "load_average_end")})
                    for s in kept}
    return kept


def main(argv=None):
    args = parse_args(argv)
    try:
        check_settings(out=args.out, device=args.device, repeats=args.repeats,
                       train_batch=args.train_batch, threads=args.threads)
        if args.dtype != "float32" and "deploy" in args.only:
            raise InputError(f"--only deploy with --dtype {args.dtype}: the deployment section "
                             "measures float32 ONNX graphs; measure it without --dtype")
    except InputError as e:
        exit_with_error(e)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats = 1
    device = args.device
    # in "auto" order, for the inputs the relation gets
    impls = available_rse_impls(torch.zeros(1, 1, 1, 1, device=device, dtype=getattr(torch, args.dtype)))
    auto_impl = impls[0]
    results = _kept_sections(args)
    results.update(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        machine=machine_info(device), load_average_start=load_average(),
        settings=dict(quick=args.quick, repeats=args.repeats, train_batch=args.train_batch,
                      dtype=args.dtype),
        memory_method=(
            "one call in a fresh process per case (forked from a server that only imported the "
            "modules), after the inputs/model exist and a tiny warm-up call (heads: the median "
            f"of {HEAD_MEMORY_SAMPLES} such processes, their range given where they differ): "
            + ("`torch.cuda.max_memory_allocated()` minus the allocation before the call."
               if device == "cuda" else
               "the rise of `ru_maxrss` (the kernel's resident-set high-water mark) over the call, "
               "i.e. all memory the call touched at its peak (tensors, allocator slack, library "
               "workspaces), beyond inputs and parameters.")),
        auto_impl=auto_impl, auto_order=rse_impl_names())
    measure = {"rse": lambda: rse_rows(args, device, impls),
               "heads": lambda: head_rows(args, device, auto_impl, impls),
               "deploy": lambda: deploy_rows(args, auto_impl)}
    runs = results.setdefault("runs", {})
    for section in (s for s in SECTIONS if s in args.only):
        start = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                     machine=machine_info(device), load_average_start=load_average())
        results[section] = measure[section]()
        runs[section] = dict(start, load_average_end=load_average())
    heads_machine = results["runs"].get("heads", {}).get("machine", {})
    results["targets"] = (
        targets(results.get("rse"), results.get("heads"), auto_impl,
                native_bf16=has_native_bfloat16(heads_machine.get("cpu_isa", ""),
                                                heads_machine.get("device", device)))
        + deploy_targets(results.get("deploy", [])))
    results["load_average_end"] = load_average()

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_json_atomic(args.out, results, indent=1, sort_keys=False)
    md_path = report_paths(args.out)[1]
    write_bytes_atomic(md_path, render_markdown(results).encode("utf-8"))
    print(f"wrote {args.out} and {md_path}")
    for t in results["targets"]:
        print(f"target: {t['name']}: {t['value']} (target {t['target']}) -> "
              f"{'met' if t['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
