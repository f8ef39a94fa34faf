"""Fig. 1b: what one pixel of the low-level map attends to in the upsampled high-level map.

For a pixel and each relation module (RSP between Q_{l+1} and Q_l), the k x k softmax weights
w of Eq. 2-3 at that pixel of level l are drawn at their (dilated) offsets over the region of
z = up(A_{l+1}) they cover; deeper purple = related context, lighter = suppressed context.
"""
from typing import List, Sequence, Tuple

import matplotlib
import matplotlib.cm as cm
import matplotlib.colors as mcolors
import matplotlib.patches as mpatches
import numpy as np

from .figures import new_figure
from .pca import normalize01, pca_rgb
from .trace import FusionTrace, HeadTrace

__all__ = ["relations_figure_size", "draw_relations", "grid_pixels", "window_cells", "BACKGROUNDS"]

IMAGE_COL_PX, MODULE_COL_PX, ROW_PX, HEADER_PX = 420, 300, 300, 70
BACKGROUNDS = ("z", "image")
_CMAP = "Purples"


def relations_figure_size(num_pixels: int, num_modules: int) -> Tuple[int, int]:
    """(width, height) in pixels of :func:`draw_relations`' figure: one row per pixel, an image
    column and one column per relation module."""
    return IMAGE_COL_PX + MODULE_COL_PX * num_modules, HEADER_PX + ROW_PX * num_pixels


def grid_pixels(height: int, width: int, n: int) -> List[Tuple[int, int]]:
    """The centres of an n x n grid of cells over an image, as (y, x)."""
    return [(int((i + 0.5) * height / n), int((j + 0.5) * width / n))
            for i in range(n) for j in range(n)]


def _window_background(trace: HeadTrace, f: FusionTrace, i: int, j: int, background: str,
                       z_gray: np.ndarray) -> np.ndarray:
    """(R, R) gray values in [0, 1] (NaN outside the map) or (R*s, R*s, 3) image crop of the
    window centred on level pixel (i, j), R = 2 r d + 1."""
    r, d = f.kernel_size // 2, f.dilation
    reach = r * d
    if background == "z":
        h, w = z_gray.shape
        out = np.full((2 * reach + 1, 2 * reach + 1), np.nan)
        y0, x0 = i - reach, j - reach
        ys, xs = slice(max(y0, 0), min(y0 + 2 * reach + 1, h)), slice(max(x0, 0), min(x0 + 2 * reach + 1, w))
        out[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0] = z_gray[ys, xs]
        return out
    s = trace.strides[f.fine]
    img = trace.image.astype(np.float64).mean(axis=2) / 255.0
    h, w = img.shape
    size = (2 * reach + 1) * s
    out = np.full((size, size), np.nan)
    y0, x0 = (i - reach) * s, (j - reach) * s
    ys, xs = slice(max(y0, 0), min(y0 + size, h)), slice(max(x0, 0), min(x0 + size, w))
    if ys.stop > ys.start and xs.stop > xs.start:
        out[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0] = img[ys, xs]
    return out


def window_cells(weights: np.ndarray, dilation: int) -> np.ndarray:
    """Place (k, k) window weights at their dilated offsets: a (R, R) array, R = (k-1) d + 1,
    NaN between the dilated samples and where the weight is 0 (outside the map)."""
    k = weights.shape[0]
    size = (k - 1) * dilation + 1
    cells = np.full((size, size), np.nan)
    cells[::dilation, ::dilation] = np.where(weights > 0, weights, np.nan)
    return cells


def _weights_at(f: FusionTrace, i: int, j: int) -> np.ndarray:
    """(k, k) weights of level pixel (i, j), averaged over heads."""
    k = f.kernel_size
    return f.weights[:, :, i, j].mean(dim=0).reshape(k, k).numpy()


def _draw_module(fig, ax, trace: HeadTrace, f: FusionTrace, y: float, x: float, background: str,
                 z_gray: np.ndarray):
    s = trace.strides[f.fine]
    h, w = f.weights.shape[-2:]
    i, j = min(int(y // s), h - 1), min(int(x // s), w - 1)
    k, d = f.kernel_size, f.dilation
    reach = (k // 2) * d
    weights = _weights_at(f, i, j)
    wmax = max(float(weights.max()), 1e-6)
    extent = (-reach - 0.5, reach + 0.5, reach + 0.5, -reach - 0.5)

    # with_extremes, not set_bad on a copy: matplotlib 3.11 warns that set_bad is going away.
    gray = matplotlib.colormaps["gray"].with_extremes(bad="0.93")
    bg = _window_background(trace, f, i, j, background, z_gray)
    ax.imshow(np.ma.masked_invalid(bg), cmap=gray, vmin=0, vmax=1, extent=extent,
              interpolation="nearest")

    norm = mcolors.Normalize(0.0, wmax)
    cmap = matplotlib.colormaps[_CMAP]
    cells = window_cells(weights, d)
    overlay = cmap(norm(np.nan_to_num(cells)))
    # Opacity grows with the weight, so suppressed context lets z show through; no colour
    # between dilated samples and outside the map (excluded from the softmax).
    overlay[..., 3] = np.where(np.isnan(cells), 0.0, 0.3 + 0.65 * np.nan_to_num(cells) / wmax)
    ax.imshow(overlay, extent=extent, interpolation="nearest")
    ax.plot([0], [0], marker="+", color="red", markersize=12, markeredgewidth=2)
    ax.set_xticks([-reach, 0, reach])
    ax.set_yticks([-reach, 0, reach])
    ax.tick_params(labelsize=7)
    ax.set_xlabel(f"offset (pixels of 1/{s} map)", fontsize=7)
    heads = f.weights.shape[0]
    what = "z = up(A%s), PC1" % f.coarse[1:] if background == "z" else "image"
    ax.set_title(f"{f.label}: {k}x{k}, dilation {d}, 1/{s}\nover {what}; "
                 f"max w {weights.max():.2f}" + (f", mean of {heads} heads" if heads > 1 else ""),
                 fontsize=8)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.8,
                 label="relation weight w (Eq. 2)")


def draw_relations(trace: HeadTrace, pixels: Sequence[Tuple[int, int]], background: str = "z"):
    """The Fig. 1b figure for `pixels` ((y, x) in original-image coordinates).

    Row p: the image with pixel p marked and each module's window footprint outlined, then
    per relation module (top-down) its weights at p over the window of `background`: "z" (the
    first principal component of z = up(A_{l+1}), the map the weights apply to) or "image".

    Returns:
        a figure of :func:`relations_figure_size` pixels.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background={background!r}: expected one of {BACKGROUNDS}")
    modules = trace.relation_fusions()
    width, height = relations_figure_size(len(pixels), len(modules))
    fig = new_figure(width, height)
    grid = fig.add_gridspec(len(pixels), 1 + len(modules),
                            width_ratios=[IMAGE_COL_PX] + [MODULE_COL_PX] * len(modules))
    # One projection per map (not per window), so shades compare across pixels.
    z_gray = {f.name: normalize01(pca_rgb(f.z, 1)[0][..., 0]) for f in modules}
    colors = matplotlib.colormaps["tab10"]
    for row, (py, px) in enumerate(pixels):
        y, x = trace.to_input_coords(py, px)
        ax = fig.add_subplot(grid[row, 0])
        ax.imshow(trace.image)
        handles = []
        for m, f in enumerate(modules):
            s = trace.strides[f.fine]
            reach = (f.kernel_size // 2) * f.dilation
            i, j = int(y // s), int(x // s)
            rect = mpatches.Rectangle(((j - reach) * s, (i - reach) * s), (2 * reach + 1) * s,
                                      (2 * reach + 1) * s, fill=False, lw=1.5,
                                      edgecolor=colors(m % 10), label=f"{f.label} window")
            ax.add_patch(rect)
            handles.append(rect)
        ax.plot([x], [y], marker="o", markersize=7, markerfacecolor="red", markeredgecolor="white")
        ax.set_xlim(0, trace.image.shape[1])
        ax.set_ylim(trace.image.shape[0], 0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"pixel (y={py}, x={px})", fontsize=9)
        # Below the image, so that no window outline is hidden behind it.
        ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.02),
                  ncols=2, frameon=False)
        for m, f in enumerate(modules):
            _draw_module(fig, fig.add_subplot(grid[row, 1 + m]), trace, f, y, x, background,
                         z_gray[f.name])
    fig.suptitle("Cross-scale pixel-to-region relation (Fig. 1b): relation weights of each RSP "
                 "module at the marked pixel\n(deeper purple = context emphasized, lighter = "
                 "suppressed; blank cells fall outside the map)", fontsize=10)
    return fig
