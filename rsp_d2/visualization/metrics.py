"""Training curves from Detectron2's ``metrics.json`` (``JSONWriter``: one JSON object per
line, with "iteration", the losses, "lr", timings, and on evaluation lines the results as
"<evaluator>/<metric>", e.g. "sem_seg/mIoU")."""
import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import matplotlib

from .figures import new_figure
from ..utils.errors import InputError

__all__ = ["Run", "load_run", "default_keys", "group_keys", "metrics_figure_size", "plot_metrics"]

WIDTH_PX, SUBPLOT_PX, HEADER_PX = 1200, 300, 60
_LINESTYLES = ("-", "--", ":", "-.")


@dataclass
class Run:
    """One training run: its name (the folder of its metrics.json) and its records."""

    name: str
    path: str
    records: List[Dict]

    def series(self, key: str) -> Tuple[List[int], List[float]]:
        """(iterations, values) of the records that hold a number under `key`."""
        its, vals = [], []
        for r in self.records:
            v = r.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                its.append(r["iteration"])
                vals.append(float(v))
        return its, vals


def load_run(path: str) -> Run:
    """Read a run folder (its ``metrics.json``) or a metrics file.

    Raises:
        InputError naming the file (and line) when it is missing, empty, or a line is not a
        JSON object with an "iteration".
    """
    file = os.path.join(path, "metrics.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise InputError(f"metrics file not found: {file} (expected Detectron2's metrics.json "
                         "or a folder holding one)")
    records = []
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{file}, line {lineno}: not JSON ({e.msg}); expected one JSON "
                                 "object per line as Detectron2's JSONWriter writes") from None
            if not isinstance(record, dict) or "iteration" not in record:
                raise InputError(f"{file}, line {lineno}: expected a JSON object with an "
                                 f"\"iteration\" key, got {line.strip()[:80]!r}")
            records.append(record)
    if not records:
        raise InputError(f"{file} is empty: no metrics were logged yet (expected one JSON "
                         "object per line)")
    name = os.path.basename(os.path.dirname(os.path.abspath(file))) or file
    return Run(name=name, path=file, records=records)


def _is_eval_summary(key: str) -> bool:
    # "sem_seg/mIoU" yes; per-class "sem_seg/IoU-road" or "bbox/AP-person" no.
    return "/" in key and "-" not in key.rsplit("/", 1)[1]


def default_keys(runs: Sequence[Run]) -> List[str]:
    """The losses, "lr", and the evaluation summaries (no per-class metrics) of all runs."""
    keys = OrderedDict()
    for run in runs:
        for r in run.records:
            for k, v in r.items():
                if isinstance(v, (int, float)) and ("loss" in k or k == "lr" or _is_eval_summary(k)):
                    keys[k] = None
    return sorted(keys)


def group_keys(keys: Sequence[str]) -> "OrderedDict[str, List[str]]":
    """Subplot title -> keys: "losses", "learning rate", then one per evaluator prefix."""
    groups: "OrderedDict[str, List[str]]" = OrderedDict([("losses", []), ("learning rate", [])])
    for k in keys:
        if "loss" in k:
            groups["losses"].append(k)
        elif k == "lr":
            groups["learning rate"].append(k)
        else:
            groups.setdefault(k.split("/", 1)[0] if "/" in k else "other", []).append(k)
    return OrderedDict((t, ks) for t, ks in groups.items() if ks)


def metrics_figure_size(num_subplots: int) -> Tuple[int, int]:
    """(width, height) in pixels: subplots stacked vertically."""
    return WIDTH_PX, HEADER_PX + SUBPLOT_PX * num_subplots


def _unique_names(runs: Sequence[Run]) -> List[str]:
    seen: Dict[str, int] = {}
    names = []
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
        names.append(run.name if seen[run.name] == 1 else f"{run.name} ({seen[run.name]})")
    return names


def plot_metrics(runs: Sequence[Run], keys: Optional[Sequence[str]] = None):
    """One subplot per group of :func:`group_keys` (losses, learning rate, each evaluator),
    x = iteration; colour = run, line style = key.

    Args:
        keys: what to plot; :func:`default_keys` when None.

    Returns:
        a figure of :func:`metrics_figure_size` pixels.
    """
    available = default_keys(runs) if keys is None else list(keys)
    present = [k for k in available if any(run.series(k)[0] for run in runs)]
    if not present:
        found = sorted({k for run in runs for r in run.records for k in r})
        raise InputError(f"none of the keys {list(available)} has a numeric value in "
                         f"{[run.path for run in runs]}; keys found: {found}")
    groups = group_keys(present)
    fig = new_figure(*metrics_figure_size(len(groups)))
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    colors = matplotlib.colormaps["tab10"]
    names = _unique_names(runs)
    for ax, (title, group) in zip(axes, groups.items()):
        for i, (run, name) in enumerate(zip(runs, names)):
            for j, key in enumerate(group):
                its, vals = run.series(key)
                if not its:
                    continue
                sparse = len(its) <= 0.5 * len(run.records)  # evaluation lines: mark points
                ax.plot(its, vals, color=colors(i % 10), linestyle=_LINESTYLES[j % len(_LINESTYLES)],
                        marker="o" if sparse else None, markersize=4,
                        label=f"{name}: {key}" if len(runs) > 1 else key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", ncols=max(1, math.ceil(len(ax.lines) / 8)))
    fig.suptitle("Training metrics: " + ", ".join(names), fontsize=11)
    return fig
