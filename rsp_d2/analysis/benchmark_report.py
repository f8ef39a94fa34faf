"""Markdown rendering of tools/benchmark.py's JSON results (docs/benchmarks.md)."""
from typing import Dict, List

__all__ = ["render_markdown"]


def _fmt(x, digits=1):
    return "n/a" if x is None else f"{x:.{digits}f}"


def _time_cell(t: Dict) -> str:
    if not t:
        return "n/a"
    return f"{t['median_ms']:.1f} ({t['min_ms']:.0f}-{t['max_ms']:.0f}, n={t['repeats']})"


def _mem_cell(m: Dict) -> str:
    if not m:
        return "(as above)"
    if "error" in m:
        return m["error"]
    samples = m.get("samples_mb", [])
    if samples and min(samples) != max(samples):
        return f"{m['peak_extra_mb']:.1f} ({min(samples):.1f}-{max(samples):.1f}, n={len(samples)})"
    return f"{m['peak_extra_mb']:.1f}"


def _rse_table(rows: List[Dict]) -> List[str]:
    out = ["| shape (N, M, C, H, W, k) | impl | forward ms | fwd+bwd ms | forward peak MiB | "
           "fwd+bwd peak MiB | speed vs reference (fwd / fwd+bwd) | "
           "memory vs reference (fwd / fwd+bwd) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = f"{r['shape']}: ({r['n']}, {r['m']}, {r['c']}, {r['h']}, {r['w']}, {r['k']})"
        sp, mem = r.get("speedup_vs_reference", {}), r.get("memory_vs_reference", {})
        out.append(f"| {shape} | {r['impl']} | {_time_cell(r['fwd'])} | {_time_cell(r['fwdbwd'])} "
                   f"| {_mem_cell(r['fwd_memory'])} | {_mem_cell(r['fwdbwd_memory'])} "
                   f"| {_fmt(sp.get('fwd'))}x / {_fmt(sp.get('fwdbwd'))}x "
                   f"| {_fmt(mem.get('fwd'), 3)} / {_fmt(mem.get('fwdbwd'), 3)} |")
    return out


def _share_cell(share) -> str:
    if not share:
        return "-"
    return f"{100 * share['share']:.1f} % ({share['relation_ms']:.0f} of {share['call_ms']:.0f} ms)"


def _head_table(rows: List[Dict]) -> List[str]:
    returned = any("memory_freed_returned" in r for r in rows)  # CPU runs since it exists
    shares = any(r.get("relation_share") for r in rows)
    out = ["| setting | head | RSE impl | ms | x Semantic FPN (time) | peak extra MiB |"
           + (" peak extra MiB, freed memory returned |" if returned else "")
           + (" relation's share (profiled call) |" if shares else ""),
           "|---|---|---|---|---|---|" + ("---|" if returned else "") + ("---|" if shares else "")]
    for r in rows:
        out.append(f"| {r['setting']} | {r['label']} | {r['rse_impl']} | {_time_cell(r['time'])} "
                   f"| {_fmt(r.get('vs_semantic_fpn'), 2)} | {_mem_cell(r['memory'])} |"
                   + (f" {_mem_cell(r.get('memory_freed_returned', {}))} |" if returned else "")
                   + (f" {_share_cell(r.get('relation_share'))} |" if shares else ""))
    return out


def _deploy_table(rows: List[Dict]) -> List[str]:
    out = ["| setting | model | runtime | RSE impl | ms | x PyTorch | x Semantic FPN (same runtime) "
           "| max abs diff / logits range | argmax (panoptic: segment) agreement | ONNX MiB |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["check"]
        out.append(f"| {r['setting']} | {r['label']} | {r['runtime']} | {r['rse_impl']} "
                   f"| {_time_cell(r['time'])} | {_fmt(r['vs_pytorch'], 2)} "
                   f"| {_fmt(r['vs_semantic_fpn'], 2)} | {c['rel_to_range']:.1e} "
                   f"| {100 * c.get('agreement', c.get('argmax_agreement')):.3f} % "
                   f"| {_fmt(r['onnx_mb'])} |")
    return out


def _measured(results: Dict, section: str) -> List[str]:
    """Where the section's numbers come from, when sections were measured by separate runs."""
    run = results.get("runs", {}).get(section)
    if not run:
        return []
    m = run.get("machine") or {}
    return [f"Measured {run.get('date')} (torch {m.get('torch')}, {m.get('torch_threads')} "
            f"threads), load average {run.get('load_average_start')} at start, "
            f"{run.get('load_average_end')} at end.", ""]


def render_markdown(results: Dict) -> str:
    m = results["machine"]
    s = results["settings"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `tools/benchmark.py`" + (" --quick (smoke run: small shapes, 1 repeat; "
                                             "not meaningful numbers)" if s["quick"] else "")
        + f" on {results['date']}. Regenerate with `python tools/benchmark.py"
        + ("" if s.get("dtype", "float32") == "float32" else f" --dtype {s['dtype']}") + "`.",
        *([] if s.get("dtype", "float32") == "float32" else [
            "", f"**{s['dtype']}**: the heads run under `torch.autocast` to {s['dtype']} (weights "
            f"and inputs in float32), the relation on {s['dtype']} inputs. Without native "
            f"{s['dtype']} instructions (see the CPU's ISA below) the CPU emulates it, slowly."]),
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores"
        + (f"; {m['cpu_isa']}; rsp_d2._C runs its {m['rse_cpp_loops']!r} loops"
           + (f" on {m['rse_cpp_threads']}" if m.get("rse_cpp_threads") else "")
           if m.get("cpu_isa") else "")
        + f"; torch {m['torch']} with "
        f"{m['torch_threads']} intra-op threads; Python {m['python']}; device: {m['device']}"
        + (f" ({m['gpu']})" if m.get("gpu") else ""),
        f"- Load average (1/5/15 min) at start {results['load_average_start']}, at end "
        f"{results['load_average_end']}: other processes on the machine compete for the cores "
        "and inflate wall times; ratios come from the same run.",
        "",
        "## Method",
        "",
        "- Times: wall clock per call, median over the repeats after one untimed warm-up call; "
        "(min-max, n) given; cases slower than 3 s per call get at most 3 repeats. The timed "
        "calls of cases compared with each other (the impls at one shape and mode; the heads of "
        "one setting) are interleaved round-robin, so load changes hit them alike. `fwd` is "
        "under `torch.no_grad()`; `fwd+bwd` is forward and backward to all four inputs (query, "
        "key, value, pos).",
        "- Peak extra memory: " + results["memory_method"],
        f"- `impl=\"auto\"` picks `{results['auto_impl']}` for float32 on {m['device']} "
        f"(preference order {results['auto_order']}, first available wins).",
        "",
    ]
    if "rse" in results:
        lines += ["## RSE operation (Eq. 1-3)", ""] + _measured(results, "rse") + [
            "Paper shapes: the 1/8 level of a 1024x2048 image (M = C/2 = 64 query/key channels, "
            "C = 128 value channels, k = 7), and the same level of 512x1024 training crops, "
            "batch 4.", ""]
        lines += _rse_table(results["rse"]) + [""]
    if "heads" in results:
        lines += _heads_section(results, s)
    if "deploy" in results:
        lines += ["## Deployment: onnxruntime (CPU) against PyTorch (CPU)", ""]
        lines += _measured(results, "deploy")
        lines += ["The head alone (random FPN maps of the image size) and the whole model "
                  "(Table I's Cityscapes configs, ResNet-50, random weights; normalization, "
                  "padding, backbone, head, crop: `rsp_d2.export.SemanticSegmentationAdapter`), "
                  "exported with `rsp_d2.export.export_onnx` (opset 17; one input size, so "
                  "the relation's index tables are constants of the graph) and run by onnxruntime's "
                  "CPU provider with the same intra-op threads as PyTorch; PyTorch runs the "
                  "relation as `impl=\"auto\"`, the ONNX graph as `impl=\"export\"`. The whole "
                  "Panoptic FPN (Table III's configs, ResNet-50 with GroupNorm in place of the "
                  "FrozenBN of random statistics, random weights, ROI_HEADS.SCORE_THRESH_TEST 0: "
                  "100 detections; `rsp_d2.export.PanopticFPNAdapter`, height and width dynamic) "
                  "on a COCO-sized image; its panoptic combination runs after the graph and is "
                  "not timed. The four runs of one setting are interleaved; the last columns "
                  "compare the ONNX output with PyTorch's on the timed input (Panoptic FPN: the "
                  "semantic logits, and the pixels with the same panoptic segment id).", ""]
        lines += _deploy_table(results["deploy"]) + [""]
    if m["device"] != "cuda":
        lines += ["GPU: not measured in this run (device {}). The same command on a machine "
                  "with CUDA measures the `triton` and `flex` implementations and the heads on the "
                  "GPU.".format(m["device"]), ""]
    lines += ["## Targets", ""]
    for t in results["targets"]:
        value = 'n/a (0 MiB)' if t['value'] is None else t['value']
        lines.append(f"- {t['name']}: measured {value} (target {t['target']}): "
                     f"**{'met' if t['met'] else 'NOT met'}**")
    lines.append("")
    return "\n".join(lines)


def _heads_section(results: Dict, s: Dict) -> List[str]:
    lines = ["## Heads", ""] + _measured(results, "heads") + [
              f"Random FPN maps (256 channels, p_l at stride 2^l); 19 classes, 128 conv dims, GN. "
              f"Training step = forward, loss, backward, batch {s['train_batch']}. Inference is "
              "also timed with one intra-op thread: on a loaded machine each of the dozens of "
              "OpenMP regions of a head can wait a scheduler time slice for a descheduled "
              "thread, which penalizes the heads with more small ops; one thread shows their "
              "compute cost. Peak memory does not depend on the thread count and is measured "
              "once. The relation's share: RSP-4's call run again under torch.profiler, the "
              "time inside the extractors' relation calls (and, in a training step, their "
              "backward nodes) over the call's wall time, median of 3.", ""]
    return lines + _head_table(results["heads"]) + [""]
