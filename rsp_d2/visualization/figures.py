"""Matplotlib figures of an exact pixel size, saved atomically as PNG (Agg backend)."""
import io
import os

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from ..utils.file_io import write_bytes_atomic  # noqa: E402

__all__ = ["DPI", "new_figure", "save_figure", "gray_panel"]

DPI = 100


def new_figure(width_px: int, height_px: int):
    """A constrained-layout figure that saves to exactly `width_px` x `height_px` pixels."""
    # Agg truncates figsize * dpi to whole pixels, and e.g. 9.7 * 100 = 969.999...: a quarter
    # pixel more makes the truncation land on the intended size.
    return plt.figure(figsize=((width_px + 0.25) / DPI, (height_px + 0.25) / DPI), dpi=DPI,
                      layout="constrained")


def save_figure(fig, path: str, *, max_colors: int = 0) -> None:
    """Write `fig` as a PNG at `path` (atomically: a reader never sees a partial file), close it.

    Args:
        max_colors: if > 0, quantize to a palette of that many colours, which makes figures of
            smooth heatmaps several times smaller (README pictures); 0 keeps full RGB.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    buf = io.BytesIO()
    # No bbox_inches="tight": it would change the pixel size the callers promise.
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    data = buf.getvalue()
    if max_colors > 0:
        from PIL import Image

        image = Image.open(io.BytesIO(data)).convert("RGB")
        # k-means refinement of the median-cut palette keeps the colours of small regions
        # (the photo next to large heatmaps) that plain median cut shifts.
        image = image.quantize(colors=max_colors, method=Image.Quantize.MEDIANCUT, kmeans=3)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    write_bytes_atomic(path, data)


def gray_panel(ax, text: str) -> None:
    """An empty panel that says why it is empty (the gray boxes of Fig. 5b)."""
    ax.set_facecolor("0.82")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, wrap=True,
            transform=ax.transAxes, color="0.25")
    ax.set_xticks([])
    ax.set_yticks([])
