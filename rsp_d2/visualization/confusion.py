"""A confusion matrix as a row-normalized heatmap with class labels."""
from typing import Sequence, Tuple

import numpy as np

from .figures import new_figure

__all__ = ["confusion_figure_size", "draw_confusion_matrix"]

BASE_PX, PER_CLASS_PX, MIN_PX = 260, 32, 640


def confusion_figure_size(num_classes: int) -> Tuple[int, int]:
    """(width, height) in pixels: a square that grows with the number of classes."""
    side = max(MIN_PX, BASE_PX + PER_CLASS_PX * num_classes)
    return side, side


def draw_confusion_matrix(counts: np.ndarray, class_names: Sequence[str], title: str = ""):
    """
    Args:
        counts: (K, K) pixel counts, row = ground-truth class, column = predicted class.
        class_names: K names.

    Returns:
        a figure of :func:`confusion_figure_size` pixels: each row divided by its total (the
        fraction of that class's pixels predicted as each class; the diagonal is the class
        accuracy), rows without pixels left blank. Cells >= 1 % are annotated when K <= 30.
    """
    counts = np.asarray(counts, dtype=np.float64)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(f"counts has shape {counts.shape}, expected ({k}, {k}) for {k} classes")
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(totals > 0, counts / totals, np.nan)
    fig = new_figure(*confusion_figure_size(k))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(norm), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), [f"{n} ({int(t)})" for n, t in zip(class_names, totals[:, 0])],
                  fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class (pixels)")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                v = norm[i, j]
                if np.isfinite(v) and v >= 0.01:
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if v > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.7, label="fraction of the ground-truth row")
    ax.set_title(title or "Confusion matrix (row-normalized, % of each ground-truth class)",
                 fontsize=10)
    return fig
