"""What a comparison (:mod:`rsp_d2.analysis.compare`) found: per variant the median, mean and
std of mIoU over seeds, per-class IoU, head FLOPs and parameters, relation content per module,
and the paired per-seed difference against a reference; as JSON, a markdown table and a plot.
"""
import io
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..utils.errors import InputError
from ..utils.file_io import write_bytes_atomic, write_json_atomic
from .compare import RELATION_CONTENT, RESULTS, RUN_INFO, Variant, is_finished, run_dir
from .stats import paired_difference, summarize

__all__ = ["CONTEXT_CLASSES", "collect", "contrast", "markdown_table", "more_seeds",
           "parse_contrast", "plot_report", "reading", "write_report"]

# Classes whose label is decided by the surroundings (rider vs person: what the figure rides).
CONTEXT_CLASSES = ("rider", "person", "bicycle")


def _miou(results: Dict, path: str) -> Dict[str, float]:
    """{"mIoU": ..., "IoU-<class>": ..., and "band_mIoU" where TEST.BOUNDARY_BAND scored the
    pixels near class boundaries} of one run's results.json (SemSegEvaluator's)."""
    sem = results.get("sem_seg")
    if not isinstance(sem, dict) or "mIoU" not in sem:
        raise InputError(f"{path}: expected a 'sem_seg' entry with 'mIoU' (a semantic "
                         f"segmentation run), got keys {sorted(results)}")
    # strict JSON: a class absent from the val split is null (NaN in the evaluator)
    out = {k: math.nan if v is None else float(v) for k, v in sem.items()
           if k == "mIoU" or k.startswith("IoU-")}
    band = results.get("sem_seg_band")
    if isinstance(band, dict) and band.get("mIoU") is not None:
        out["band_mIoU"] = float(band["mIoU"])
    return out


def _head_cost(variant: Variant) -> Dict[str, float]:
    """Head multiply-adds and parameters at the config's test size (see flops.count_head)."""
    from ..config import load_config
    from .flops import count_head

    cfg = load_config(variant.config_file, variant.opts)
    counts = count_head(cfg, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    return {"flops": counts["flops"], "params": counts["params"],
            "at": [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST]}


def _mean_relations(per_seed: List[Dict]) -> Dict[str, float]:
    """Module -> content_fraction averaged over the seeds that have scores."""
    out: Dict[str, List[float]] = {}
    for scores in per_seed:
        for module, s in scores.items():
            out.setdefault(module, []).append(s["content_fraction"])
    return {m: sum(v) / len(v) for m, v in out.items()}


def collect(variants: Sequence[Variant], seeds: Sequence[int], root: str, *,
            reference: Optional[str] = None, classes: Sequence[str] = CONTEXT_CLASSES,
            confidence: float = 0.95, contrasts: Optional[Sequence[Tuple[str, str]]] = None,
            precision: Optional[float] = None) -> Dict:
    """Read every finished run under `root`; unfinished ones are listed under "missing".

    Args:
        contrasts: (A, B) pairs whose paired per-seed difference A - B is reported under
            "contrasts" (default: every variant against the reference).
        precision: the half-width of the `confidence` interval a contrast must reach; each
            contrast then says whether it did ("reached").
    """
    reference = reference or variants[0].name
    if reference not in [v.name for v in variants]:
        raise InputError(f"--reference {reference!r}: not one of the variants "
                         f"{[v.name for v in variants]}")
    report = {"root": _portable(root), "seeds": list(seeds), "reference": reference,
              "classes": list(classes), "confidence": confidence, "variants": {},
              "missing": []}
    for v in variants:
        runs, relations = {}, []
        for s in seeds:
            out = run_dir(root, v, s)
            if not is_finished(out):
                report["missing"].append(f"{v.name}/seed{s}")
                continue
            path = os.path.join(out, RESULTS)
            with open(path) as f:
                runs[s] = _miou(json.load(f), path)
            info_path = os.path.join(out, RUN_INFO)  # absent for runs made by hand
            if os.path.isfile(info_path):
                with open(info_path) as f:
                    info = json.load(f)
                runs[s]["wall_s"] = info.get("wall_s")
                runs[s]["cpu"] = info.get("cpu")
            rel = os.path.join(out, RELATION_CONTENT)
            if os.path.isfile(rel):
                with open(rel) as f:
                    runs[s]["relation_content"] = json.load(f)
                    relations.append(runs[s]["relation_content"])
        entry = {"config_file": _portable(v.config_file),
                 "opts": [_portable(o) if os.path.isabs(o) else o for o in v.opts],
                 "runs": runs, **_head_cost(v), "relation_content": _mean_relations(relations),
                 "paper": _paper_entry(v)}
        walls = [r["wall_s"] for r in runs.values() if r.get("wall_s") is not None]
        entry["wall_s_median"] = summarize(walls)["median"] if walls else None
        if runs:
            entry["mIoU"] = summarize([r["mIoU"] for r in runs.values()])
            entry["classes"] = {c: summarize([r.get(f"IoU-{c}", math.nan)
                                              for r in runs.values()])["median"]
                                for c in classes}
        report["variants"][v.name] = entry
    report["cpu"] = _one_cpu(report["variants"])
    ref_runs = report["variants"][reference]["runs"]
    for name, entry in report["variants"].items():
        if name != reference and entry["runs"]:
            entry["vs_reference"] = paired_difference(
                {s: r["mIoU"] for s, r in entry["runs"].items()},
                {s: r["mIoU"] for s, r in ref_runs.items()}, confidence)
    names = [v.name for v in variants]
    pairs = list(contrasts) if contrasts is not None else \
        [(n, reference) for n in names if n != reference]
    report["precision"] = precision
    report["contrasts"] = [contrast(report["variants"], a, b, confidence, precision)
                           for a, b in pairs]
    return report


def _paper_entry(variant: Variant) -> Optional[Dict]:
    """The paper's row the variant stands for: {"table", "model", "mIoU"}, or None."""
    from .paper_tables import paper_miou

    row = paper_miou(variant.paper) if variant.paper else None
    return None if row is None else {"table": row.table, "model": row.model, "mIoU": row.miou}


def _paper_difference(variants: Dict, a: str, b: str) -> Optional[Dict]:
    """The paper's A - B on Cityscapes (of the mIoU it prints, Table I's medians of 5 runs, not
    a paired mean; rounded to 0.1 each) and the tables it comes from; None when either has no
    row."""
    pa, pb = variants[a].get("paper"), variants[b].get("paper")
    if not (pa and pb):
        return None
    tables = pa["table"] if pa["table"] == pb["table"] else f"{pa['table']}, {pb['table']}"
    return {"difference": round(pa["mIoU"] - pb["mIoU"], 2), "tables": tables}


def _portable(path: str) -> str:
    """`path` relative to the current folder (the repository, for its commands) when inside it,
    and a shipped config as ``configs/...``: a published report holds no machine's absolute
    paths."""
    from ..model_zoo import config_root

    path, here, configs = os.path.abspath(path), os.getcwd(), os.path.realpath(config_root())
    if os.path.realpath(path).startswith(configs + os.sep):
        return os.path.join("configs", os.path.relpath(os.path.realpath(path), configs))
    return os.path.relpath(path, here) if path.startswith(here + os.sep) else path


def parse_contrast(text: str) -> Tuple[str, str]:
    """``"A:B"`` (the command line's --contrast) -> ("A", "B")."""
    parts = text.split(":")
    if len(parts) != 2 or not all(parts):
        raise InputError(f"--contrast {text!r}: expected A:B, two variant names")
    return parts[0], parts[1]


def more_seeds(report: Dict, seeds: Sequence[int], max_seeds: int) -> Optional[List[int]]:
    """`seeds` and one more when a contrast of `report` has not reached its precision and
    fewer than `max_seeds` seeds were run; else None (the comparison is done)."""
    if all(c["reached"] for c in report["contrasts"]) or len(seeds) >= max_seeds:
        return None
    return list(seeds) + [max(seeds) + 1]


def contrast(variants: Dict, a: str, b: str, confidence: float,
             precision: Optional[float]) -> Dict:
    """The paired difference A - B over the seeds both have, its interval's half-width, and
    whether that is at most `precision` (None: no precision asked)."""
    for name in (a, b):
        if name not in variants:
            raise InputError(f"contrast {a}:{b}: {name!r} is not one of the variants "
                             f"{sorted(variants)}")
    def differences(metric):
        return paired_difference(
            {s: r[metric] for s, r in variants[a]["runs"].items() if metric in r},
            {s: r[metric] for s, r in variants[b]["runs"].items() if metric in r}, confidence)

    d = differences("mIoU")
    half = (d["ci_high"] - d["ci_low"]) / 2
    reached = None if precision is None else bool(half <= precision)  # False while NaN
    band = differences("band_mIoU")  # where the difference is: near class boundaries
    paper = _paper_difference(variants, a, b)
    if paper is not None:  # None: no interval yet (under 2 seeds)
        paper["inside_ci"] = (None if math.isnan(d["ci_low"]) else
                              bool(d["ci_low"] <= paper["difference"] <= d["ci_high"]))
    return {"a": a, "b": b, **d, "half_width": half, "reached": reached,
            "excludes_zero": bool(d["ci_low"] > 0 or d["ci_high"] < 0), "paper": paper,
            "band": {"n": band["n"], "mean": band["mean"], "ci_low": band["ci_low"],
                     "ci_high": band["ci_high"]}}


def _one_cpu(variants: Dict) -> Optional[str]:
    """The CPU model every run was made on (None when no run recorded one); runs from two
    models are refused, since floats differ across CPU types and a pairing would mix them."""
    cpus = {}
    for name, entry in variants.items():
        for seed, run in entry["runs"].items():
            if run.get("cpu"):
                cpus.setdefault(run["cpu"], f"{name}/seed{seed}")
    if len(cpus) > 1:
        shown = "; ".join(f"{cpu!r} (e.g. {where})" for cpu, where in sorted(cpus.items()))
        raise InputError(f"the runs come from {len(cpus)} CPU models: {shown}; runs of different "
                         "CPU types are not compared: put each machine's runs in its own --output")
    return next(iter(cpus), None)


def _f(x, digits=1):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_table(report: Dict) -> str:
    """One row per variant: seeds, mIoU median/mean/std, paired difference vs the reference
    (mean, CI, wins/losses), median class IoU, head GFLOPs and parameters, relation content."""
    classes = report["classes"]
    pct = int(round(report["confidence"] * 100))
    head = (["variant", "seeds", "mIoU median", "mean", "std",
             f"Δ vs {report['reference']} (mean [{pct}% CI])", "wins/losses"]
            + [f"{c} IoU" for c in classes] + ["head GFLOPs", "head params (M)",
                                               "relation content per module", "run wall s"])
    lines = [f"Runs made on: {report.get('cpu') or 'CPU not recorded'}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in report["variants"].items():
        m = e.get("mIoU", {})
        d = e.get("vs_reference")
        diff = (f"{d['mean']:+.1f} [{_f(d['ci_low'])}, {_f(d['ci_high'])}]" if d else "–")
        signs = f"{d['wins']}/{d['losses']}" if d else "–"
        rel = ", ".join(f"{k} {v:.2f}" for k, v in sorted(e["relation_content"].items())) or "–"
        row = ([name, ",".join(str(s) for s in sorted(e["runs"])) or "none",
                _f(m.get("median")), _f(m.get("mean")), _f(m.get("std")), diff, signs]
               + [_f(e.get("classes", {}).get(c)) for c in classes]
               + [_f(e["flops"] / 1e9, 2), _f(e["params"] / 1e6, 3), rel,
                  _f(e["wall_s_median"], 0)])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n" + _contrast_table(report, pct)


def reading(c: Dict) -> str:
    """A contrast's interval in words: whether it shows a difference (excludes 0), and where the
    paper's difference of the same heads on Cityscapes lies against it (where known). For a
    miniature that is a comparison of direction and rough size across scales, not a test of
    the paper's number."""
    if not c["n"] > 1 or math.isnan(c["half_width"]):
        return "too few seeds"
    paper = c.get("paper")
    cited = "" if paper is None else f"the paper's {paper['difference']:+.1f} (Cityscapes)"
    if paper is None:
        where = ""
    elif paper["inside_ci"]:
        where = f"{cited} inside"
    else:
        side = "above" if paper["difference"] > c["ci_high"] else "below"
        where = f"{cited} {side} the interval"
    if c["excludes_zero"]:
        found = f"{c['a'] if c['mean'] > 0 else c['b']} ahead"
        return f"{found}; {where}" if where else found
    if paper is None:
        return "no difference shown"
    if paper["inside_ci"]:
        return f"undecided: the interval holds 0 and {cited}"
    return f"no difference shown; {where}"


def _contrast_table(report: Dict, pct: int) -> str:
    """One row per contrast: "A - B = +x.x ± y.y over N seeds", whether the precision the
    comparison asked for was reached, the paper's difference and the reading."""
    rows = report.get("contrasts") or []
    if not rows:
        return ""
    precision = report.get("precision")
    goal = f"±{precision:.1f} reached" if precision is not None else "precision"
    lines = ["", f"| contrast | seeds | mean difference ± {pct}% half-width | {pct}% CI | "
             f"wins/losses | {goal} | paper, Cityscapes (table) | reading | "
             f"boundary-band mIoU difference [{pct}% CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in rows:
        reached = "–" if c["reached"] is None else ("yes" if c["reached"] else "no")
        band, paper = c["band"], c.get("paper")
        near = "–" if not band["n"] else \
            f"{band['mean']:+.1f} [{_f(band['ci_low'])}, {_f(band['ci_high'])}]"
        cited = "–" if paper is None else f"{paper['difference']:+.1f} ({paper['tables']})"
        lines.append(f"| {c['a']} − {c['b']} | {c['n']} | {c['mean']:+.1f} ± "
                     f"{_f(c['half_width'])} | [{_f(c['ci_low'])}, {_f(c['ci_high'])}] | "
                     f"{c['wins']}/{c['losses']} | {reached} | {cited} | {reading(c)} | {near} |")
    return "\n".join(lines) + "\n"


def plot_report(report: Dict) -> bytes:
    """PNG. Top: mIoU of every run (one point per seed), the median as a bar, per variant.
    Below, when the report has contrasts: each contrast's per-seed differences A - B (points),
    their mean with its confidence interval, and the paper's difference of the same heads on
    Cityscapes (a diamond) where known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["variants"])
    contrasts = report.get("contrasts") or []
    rows = 2 if contrasts else 1
    fig, axes = plt.subplots(rows, 1, figsize=(1.2 * max(len(names), len(contrasts)) + 2,
                                               4.5 * rows), dpi=100, squeeze=False)
    ax = axes[0][0]
    for i, name in enumerate(names):
        runs = report["variants"][name]["runs"]
        ys = [runs[s]["mIoU"] for s in sorted(runs)]
        ax.scatter([i] * len(ys), ys, s=18, color="tab:blue", zorder=3)
        if ys:
            med = report["variants"][name]["mIoU"]["median"]
            ax.hlines(med, i - 0.3, i + 0.3, color="tab:red", linewidth=2, zorder=2)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("mIoU, one point per seed (red: median)")
    ax.grid(axis="y", alpha=0.3)
    if contrasts:
        _plot_contrasts(axes[1][0], report, contrasts)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _plot_contrasts(ax, report: Dict, contrasts: List[Dict]) -> None:
    """Per contrast: the per-seed differences (grey), the mean with its interval (black), the
    paper's difference (red diamond)."""
    pct = int(round(report["confidence"] * 100))
    for i, c in enumerate(contrasts):
        a, b = report["variants"][c["a"]]["runs"], report["variants"][c["b"]]["runs"]
        ax.scatter([i + 0.2] * len(c["seeds"]), [a[s]["mIoU"] - b[s]["mIoU"] for s in c["seeds"]],
                   s=10, color="0.6", zorder=2)
        if not math.isnan(c["half_width"]):
            ax.errorbar(i, c["mean"], yerr=c["half_width"], fmt="o", color="black", capsize=4,
                        zorder=3)
        if c.get("paper"):
            ax.scatter(i, c["paper"]["difference"], marker="D", s=30, color="tab:red", zorder=4)
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.set_xticks(range(len(contrasts)), [f"{c['a']} − {c['b']}" for c in contrasts],
                  rotation=30, ha="right")
    ax.set_ylabel("difference (mIoU points)")
    ax.set_title(f"paired differences: mean, {pct}% CI; grey: seeds; red: paper")
    ax.grid(axis="y", alpha=0.3)


def write_report(report: Dict, prefix: str) -> Dict[str, str]:
    """PREFIX.json, PREFIX.md and PREFIX.png, atomically; returns {kind: path}."""
    paths = {"json": prefix + ".json", "table": prefix + ".md", "plot": prefix + ".png"}
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    write_json_atomic(paths["json"], report, indent=2, sort_keys=False)
    write_bytes_atomic(paths["table"], markdown_table(report).encode())
    write_bytes_atomic(paths["plot"], plot_report(report))
    return paths
