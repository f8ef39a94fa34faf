"""Fig. 5b: one channel of the top-down aggregation, level by level, RSP head next to the sum
baseline. Per model three rows: Q_l, what the fusion adds (the RSE output for RSP, Eq. 1; the
whole of up(A_{l+1}) for the sum: gray), and the result A_l (Eq. 4)."""
from typing import List, Optional, Sequence, Tuple

import matplotlib
import matplotlib.cm as cm
import matplotlib.colors as mcolors
import numpy as np
import torch

from .figures import gray_panel, new_figure
from ..utils.errors import InputError
from .trace import HeadTrace

__all__ = ["propagation_figure_size", "draw_propagation", "pick_channel", "ROWS_PER_MODEL"]

LABEL_COL_PX, COL_PX, ROW_PX, HEADER_PX = 120, 240, 150, 90
ROWS_PER_MODEL = 3
_CMAP = "viridis"
_CONTEXT_NAMES = {"rsp": "RSE(Q{f}, up(A{c}))", "self": "SELF relation of up(A{c})",
                  "context": "window mean of up(A{c})"}


def propagation_figure_size(num_levels: int, num_models: int) -> Tuple[int, int]:
    """(width, height) in pixels: a label column and one column per level; three rows per
    model."""
    return (LABEL_COL_PX + COL_PX * num_levels,
            HEADER_PX + ROW_PX * ROWS_PER_MODEL * num_models)


def _levels(traces: Sequence[HeadTrace]) -> List[str]:
    """All levels of all traces, coarsest first (the paper's left-to-right order)."""
    strides = {}
    for t in traces:
        strides.update(t.strides)
    return sorted(strides, key=lambda n: -strides[n])


def pick_channel(trace: HeadTrace) -> int:
    """The channel of A_finest with the largest spatial standard deviation: the one most
    likely to show structure."""
    finest = trace.levels[0]
    a = trace.valid(finest, trace.a[finest])
    return int(a.flatten(1).std(dim=1).argmax())


def _show(ax, trace: HeadTrace, level: str, t: torch.Tensor, channel: int, title: str):
    m = trace.valid(level, t[channel]).numpy()
    lo, hi = float(m.min()), float(m.max())
    img = (m - lo) / (hi - lo) if hi > lo else np.full_like(m, 0.5)
    ax.imshow(img, cmap=_CMAP, vmin=0, vmax=1, extent=trace.extent(level),
              interpolation="nearest")
    ax.set_xlim(0, trace.image.shape[1])
    ax.set_ylim(trace.image.shape[0], 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title}\n[{lo:.2g}, {hi:.2g}]", fontsize=7)


def _gray(ax, trace: HeadTrace, text: str):
    gray_panel(ax, text)
    # Same box as the maps beside it.
    ax.set_xlim(0, trace.image.shape[1])
    ax.set_ylim(trace.image.shape[0], 0)
    ax.set_aspect("equal")


def draw_propagation(models: Sequence[Tuple[str, HeadTrace]], channel: Optional[int] = None,
                     note: str = ""):
    """
    Args:
        models: (name, trace) per model, e.g. [("RSP-4", rsp), ("baseline", sum_baseline)].
        channel: the channel drawn in every map of a model; by default :func:`pick_channel`
            of each model (two models' channels do not correspond anyway).
        note: appended to the title (e.g. why there is no baseline).

    Returns:
        a figure of :func:`propagation_figure_size` pixels. Each map is min-max normalized
        on its own; its range is printed under its title.
    """
    for name, trace in models:  # before the figure exists: a refusal leaves no open figure
        num_channels = trace.q[trace.levels[0]].shape[0]
        if channel is not None and not 0 <= channel < num_channels:
            raise InputError(f"--channel {channel} does not exist: {name} has {num_channels} "
                             "channels")
    levels = _levels([t for _, t in models])
    fig = new_figure(*propagation_figure_size(len(levels), len(models)))
    axes = fig.subplots(ROWS_PER_MODEL * len(models), len(levels), squeeze=False)
    for m, (name, trace) in enumerate(models):
        c = pick_channel(trace) if channel is None else channel
        rows = axes[ROWS_PER_MODEL * m: ROWS_PER_MODEL * (m + 1)]
        for col, level in enumerate(levels):
            n = level[1:]
            if level not in trace.levels:
                for r in range(ROWS_PER_MODEL):
                    _gray(rows[r][col], trace, f"no Q{n} in {name}")
                continue
            _show(rows[0][col], trace, level, trace.q[level], c, f"Q{n}")
            f = trace.fusion_into(level)
            if f is None:
                _gray(rows[1][col], trace, f"Q{n} is the top level:\nnothing to fuse")
                _show(rows[2][col], trace, level, trace.a[level], c, f"A{n} = Q{n}")
            elif f.kind == "sum":
                _gray(rows[1][col], trace, f"sum: up(A{f.coarse[1:]})\npassed down whole\n"
                                            "(no relational features)")
                _show(rows[2][col], trace, level, trace.a[level], c,
                      f"A{n} = Q{n} + up(A{f.coarse[1:]})")
            else:
                what = _CONTEXT_NAMES.get(f.kind, f.kind).format(f=n, c=f.coarse[1:])
                _show(rows[1][col], trace, level, f.context, c, what)
                added = "RSE" if f.kind == "rsp" else f.kind.upper()
                _show(rows[2][col], trace, level, trace.a[level], c, f"A{n} = Q{n} + {added}")
        for r, label in enumerate(("Q_l", "context added", "A_l")):
            rows[r][0].set_ylabel(f"{name}, ch {c}\n{label}", fontsize=8)
    fig.colorbar(cm.ScalarMappable(norm=mcolors.Normalize(0, 1),
                                   cmap=matplotlib.colormaps[_CMAP]),
                 ax=axes.ravel().tolist(), shrink=0.5, location="right",
                 label="activation, min-max normalized per map")
    fig.suptitle("Context propagation (Fig. 5b): one channel of the top-down aggregation, "
                 "coarse to fine" + (f"\n{note}" if note else ""), fontsize=10)
    return fig
