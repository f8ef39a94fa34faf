"""The targets tools/benchmark.py checks its measurements against (issue 24's), as rows
{"name", "value", "target", "met"} of docs/benchmarks*.json: the relation's memory against the
definition's, the heads' speed, memory and the relation's share of RSP-4, bfloat16 against
float32, and the exported graphs under onnxruntime."""
from typing import Dict, List

__all__ = ["targets", "speed_targets", "memory_targets", "deploy_targets", "has_native_bfloat16"]


def has_native_bfloat16(cpu_isa: str, device: str = "cpu") -> bool:
    """Whether the machine whose ``cpu_isa`` (machine_info's, e.g. "AVX512-BF16, AVX-512F, AVX2,
    FMA; no AMX-BF16") is given computes bfloat16 natively; CUDA devices do."""
    has = cpu_isa.split("; no ")[0]
    return device == "cuda" or "AVX512-BF16" in has or "AMX-BF16" in has


def deploy_targets(rows: List[Dict]) -> List[Dict]:
    """RSP-4 exported: at most PyTorch's time, and the head at most 0.86x Semantic FPN's."""
    out = []
    for row in (r for r in rows if r["head"] == "rsp4" and r["runtime"] == "onnxruntime"):
        out.append(dict(name=f"RSP-4 {row['setting']}: onnxruntime / PyTorch time",
                        value=row["vs_pytorch"], target="<= 1.0", met=row["vs_pytorch"] <= 1.0))
        # The head alone should keep its FLOPs advantage; whole models share a backbone.
        bound = 0.86 if row["what"] == "head" else 1.0
        out.append(dict(name=f"RSP-4 {row['setting']}, onnxruntime: time / Semantic FPN's",
                        value=row["vs_semantic_fpn"],
                        target=f"<= {bound} (head FLOPs ratio 0.86)",
                        met=row["vs_semantic_fpn"] <= bound))
    return out


def targets(rse: List[Dict], heads: List[Dict], auto_impl: str,
            native_bf16: bool = False) -> List[Dict]:
    """The relation's and the heads' targets; `native_bf16`: the heads' machine computes
    bfloat16 natively (else the bfloat16 targets say "unmeasured" and are not met)."""
    out = []
    if not rse or not heads:
        return out
    first_shape = rse[0]["shape"]
    row = next((r for r in rse if r["shape"] == first_shape and r["impl"] == auto_impl), None)
    if row and row.get("memory_vs_reference"):
        for mode in ("fwd", "fwdbwd"):
            ratio = row["memory_vs_reference"][mode]
            name = f"RSE peak extra memory, {first_shape}, {mode}, {auto_impl} / reference"
            out.append(dict(name=name, value=ratio, target="<= 0.125",
                            met=ratio is not None and ratio <= 0.125))
    out += speed_targets(heads, auto_impl, native_bf16)
    heads = [r for r in heads if r.get("dtype", "float32") == "float32"]
    inference = [r for r in heads if r["mode"] == "inference"]
    out += memory_targets(inference, auto_impl)
    for rsp4 in (r for r in inference if r["head"] == "rsp4" and r["rse_impl"] == auto_impl):
        out.append(dict(name=f"RSP-4 head inference time / Semantic FPN head ({rsp4['setting']})",
                        value=rsp4["vs_semantic_fpn"], target="<= 1.0 (FLOPs ratio 0.86)",
                        met=rsp4["vs_semantic_fpn"] <= 1.0))
        ref = next((r for r in inference if r["head"] == "rsp4" and r["rse_impl"] == "reference"
                    and r["setting"] == rsp4["setting"]), None)
        if ref:
            out.append(dict(name="RSP-4 head inference time, impl=reference / auto",
                            value=round(ref["time"]["median_ms"] / rsp4["time"]["median_ms"], 2),
                            target="> 1", met=ref["time"]["median_ms"] > rsp4["time"]["median_ms"]))
    return out


def speed_targets(heads: List[Dict], auto_impl: str, native_bf16: bool = False) -> List[Dict]:
    """The relation's share of RSP-4's time (at most 5 % at inference, 10 % of a training step),
    RSP-4's training step at most the FLOPs ratio of Semantic FPN's, and in a bfloat16 run
    RSP-4's bfloat16 speed-up at least Semantic FPN's and its bfloat16 time at most the FLOPs
    ratio of Semantic FPN's."""
    out = []
    rsp4 = [r for r in heads if r["head"] == "rsp4" and r["rse_impl"] == auto_impl]
    for r in (r for r in rsp4 if r.get("relation_share")):
        bound = 0.05 if r["mode"] == "inference" else 0.10
        share = r["relation_share"]["share"]
        out.append(dict(name=f"RSP-4 head, the relation's share of its time ({r['setting']})",
                        value=share, target=f"<= {bound}", met=share <= bound))
    for r in (r for r in rsp4 if r["mode"] == "train" and r.get("dtype", "float32") == "float32"):
        out.append(dict(name=f"RSP-4 head training step / Semantic FPN's ({r['setting']})",
                        value=r["vs_semantic_fpn"], target="<= 0.86 (FLOPs ratio)",
                        met=r["vs_semantic_fpn"] <= 0.86))
    native = native_bf16
    unmeasured = "" if native else ", unmeasured: this CPU has no native bfloat16"
    by_key = {(r["setting"].rsplit(", ", 1)[0], r["head"], r["rse_impl"], r.get("dtype")): r
              for r in heads if r["mode"] == "inference" and r["threads"] > 1}
    for (setting, head, impl, dtype), r in by_key.items():
        if head != "rsp4" or impl != auto_impl or dtype != "bfloat16":
            continue
        fp32 = {h: by_key.get((setting, h, i, "float32")) for h, i in
                (("rsp4", auto_impl), ("semantic_fpn", "-"))}
        bf16_fpn = by_key.get((setting, "semantic_fpn", "-", "bfloat16"))
        if None in fp32.values() or bf16_fpn is None:
            continue
        gain = round(fp32["rsp4"]["time"]["median_ms"] / r["time"]["median_ms"], 3)
        fpn_gain = round(fp32["semantic_fpn"]["time"]["median_ms"]
                         / bf16_fpn["time"]["median_ms"], 3)
        out.append(dict(name=f"RSP-4 head bfloat16 speed-up over float32, against Semantic "
                             f"FPN's {fpn_gain} ({setting}{unmeasured})",
                        value=gain, target=f">= {fpn_gain}", met=native and gain >= fpn_gain))
        out.append(dict(name=f"RSP-4 head in bfloat16 / Semantic FPN's in bfloat16 "
                             f"({setting}{unmeasured})",
                        value=r["vs_semantic_fpn"], target="<= 0.86 (FLOPs ratio)",
                        met=native and r["vs_semantic_fpn"] <= 0.86))
    return out


def memory_targets(inference: List[Dict], auto_impl: str) -> List[Dict]:
    """RSP-4's inference peak memory at most Semantic FPN's, by each method measured."""
    out = []
    fpn = next((r for r in inference if r["head"] == "semantic_fpn" and r["memory"]), None)
    rsp4 = next((r for r in inference if r["head"] == "rsp4" and r["rse_impl"] == auto_impl
                 and r["memory"]), None)
    if fpn is None or rsp4 is None:
        return out
    for key, how in (("memory", "glibc's default allocator"),
                     ("memory_freed_returned", "freed memory returned at once")):
        a, b = rsp4.get(key, {}), fpn.get(key, {})
        if "peak_extra_mb" in a and "peak_extra_mb" in b:
            # tiny --quick shapes can peak at 0 MiB: then no ratio, but still a comparison
            mine, theirs = a["peak_extra_mb"], b["peak_extra_mb"]
            ratio = round(mine / theirs, 3) if theirs > 0 else None
            out.append(dict(name=f"RSP-4 head inference peak extra memory / Semantic FPN's "
                                 f"({how})", value=ratio, target="<= 1.0", met=mine <= theirs))
    return out
