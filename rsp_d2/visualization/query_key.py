"""Fig. 4: the learnt query f_q(x) and key f_k(z) of each RSP module, each shown as its first
three principal components in RGB. Regions where the two differ are where the relation finds
complementary context (Sec. IV-D)."""
from typing import Tuple

import matplotlib.patches as mpatches

from .figures import new_figure
from .pca import pca_rgb
from .trace import HeadTrace

__all__ = ["query_key_figure_size", "draw_query_key"]

COL_PX, ROW_PX, HEADER_PX = 400, 230, 90


def query_key_figure_size(num_modules: int) -> Tuple[int, int]:
    """(width, height) in pixels: columns image | query | key, one row per relation module."""
    return 3 * COL_PX, HEADER_PX + ROW_PX * num_modules


def _explained(ev) -> str:
    return "/".join(f"{100 * e:.0f}" for e in ev) + " % var."


def draw_query_key(trace: HeadTrace):
    """One row per relation module (top-down): the image, PCA-RGB of the query, of the key.

    Returns:
        a figure of :func:`query_key_figure_size` pixels.
    """
    modules = trace.relation_fusions()
    fig = new_figure(*query_key_figure_size(len(modules)))
    axes = fig.subplots(len(modules), 3, squeeze=False)
    h, w = trace.image.shape[:2]
    for row, f in enumerate(modules):
        q_src = f"up(A{f.coarse[1:]})" if f.query_from == "z" else f"Q{f.fine[1:]}"
        ax = axes[row, 0]
        ax.imshow(trace.image)
        ax.set_title(f"{f.label}: input image", fontsize=9)
        for ax, emb, what in ((axes[row, 1], f.query, f"query f_q({q_src})"),
                              (axes[row, 2], f.key, f"key f_k(up(A{f.coarse[1:]}))")):
            rgb, ev = pca_rgb(trace.valid(f.fine, emb))
            ax.imshow(rgb, extent=trace.extent(f.fine), interpolation="nearest")
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_title(f"{f.label} {what}\n{emb.shape[0]} ch at 1/{trace.strides[f.fine]}, "
                         f"PC1-3: {_explained(ev)}", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    legend = [mpatches.Patch(color=c, label=f"PC{i + 1}") for i, c in
              enumerate(("red", "green", "blue"))]
    fig.legend(handles=legend, loc="outside upper right", ncols=3, fontsize=8,
               title="colour channel = principal component", title_fontsize=8)
    fig.suptitle("Learnt query and key of each RSP module (Fig. 4), first 3 principal "
                 "components in RGB", fontsize=10)
    return fig
