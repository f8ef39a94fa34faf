"""Seeing what the RSP head does: prediction overlays, the paper's qualitative
figures (relation weights, Fig. 1b; query/key PCA, Fig. 4; context propagation, Fig. 5b),
training curves and confusion matrices. Figures are matplotlib (Agg) PNGs of a fixed pixel
size given by each module's ``*_figure_size`` function.

Importing this package selects matplotlib's Agg backend.
"""
from .confusion import confusion_figure_size, draw_confusion_matrix
from .figures import new_figure, save_figure
from .head_figures import FIGURE_NAMES, make_head_figures
from .metrics import Run, load_run, metrics_figure_size, plot_metrics
from .pca import pca_rgb
from .overlays import save_overlays, stuff_colors, with_stuff_colors
from .propagation import draw_propagation, propagation_figure_size
from .query_key import draw_query_key, query_key_figure_size
from .relations import draw_relations, grid_pixels, relations_figure_size
from .trace import FusionTrace, HeadTrace, check_rsp_config, trace_head
