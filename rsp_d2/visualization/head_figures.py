"""The three head figures of ``tools/visualize_relations.py`` for one image: relation weights
(Fig. 1b), query/key PCA (Fig. 4) and context propagation (Fig. 5b)."""
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

from .figures import save_figure
from ..config import load_config
from ..engine.checkpoint import check_checkpoint
from ..engine.predictor import Predictor, read_image
from ..utils.errors import InputError
from ..utils.paths import check_output_dir, check_output_file
from .propagation import draw_propagation
from .query_key import draw_query_key
from .relations import draw_relations, grid_pixels
from .trace import check_rsp_config, trace_head

__all__ = ["FIGURE_NAMES", "MAX_PIXELS", "MAX_GRID", "MAX_COLORS", "parse_pixel",
           "make_head_figures"]

FIGURE_NAMES = {"relations": "relations.png", "query_key": "query_key_pca.png",
                "propagation": "propagation.png"}
MAX_PIXELS = 16  # one figure row each
MAX_GRID = math.isqrt(MAX_PIXELS)  # --grid N draws N x N pixels
MAX_COLORS = 256  # a PNG palette's size


def parse_pixel(text: str) -> Tuple[int, int]:
    """"y,x" -> (y, x)."""
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--pixels {text!r}: expected y,x (two integers, row first)") from None
    return y, x


def _config_name(path: str) -> str:
    """A model's name in the figures: its config's file name, or the run folder's name for the
    ``config.yaml`` that train_net.py dumps into each run."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem == "config":
        return os.path.basename(os.path.dirname(os.path.abspath(path))) or stem
    return stem


def make_head_figures(
    config_file: str,
    checkpoint: str,
    image_path: str,
    output_dir: str,
    *,
    pixels: Sequence[Tuple[int, int]] = (),
    grid: int = 2,
    background: str = "z",
    channel: Optional[int] = None,
    baseline_config: Optional[str] = None,
    baseline_checkpoint: Optional[str] = None,
    opts: Sequence[str] = (),
    max_colors: int = 0,
    content: Optional[Dict] = None,
) -> Dict[str, str]:
    """Write the three figures into `output_dir`; return {figure: path}.

    Every input is checked before a model is built: the output folder and files, the numbers,
    the config (an RSPHead with at least one rsp/self fusion), the checkpoint path, the image,
    the pixels, the baseline pair; a channel beyond a model's count is refused once its head
    is traced, before any figure is written.

    Args:
        output_dir: created if missing.
        pixels: (y, x) in the image's own pixel coordinates; when empty, the centres of a
            `grid` x `grid` grid.
        opts: KEY VALUE config overrides applied to both models.
        max_colors: see :func:`save_figure`.
        content: if given, filled with the content-vs-position scores of each relation
            module on this image ({"RSP-43": {...}}, rsp_d2.visualization.relation_content).
    """
    check_output_dir(output_dir, "--output")
    paths = {name: os.path.join(output_dir, file) for name, file in FIGURE_NAMES.items()}
    for path in paths.values():
        check_output_file(path, "--output", create_parents=True)
    if len(pixels) > MAX_PIXELS:
        raise InputError(f"{len(pixels)} pixels: at most {MAX_PIXELS} (one figure row each)")
    if not pixels and not 1 <= grid <= MAX_GRID:
        raise InputError(f"--grid {grid}: expected 1 to {MAX_GRID} (N x N pixels, at most "
                         f"{MAX_PIXELS}: one figure row each)")
    if channel is not None and channel < 0:
        raise InputError(f"--channel {channel}: expected a channel index >= 0")
    if not 0 <= max_colors <= MAX_COLORS:
        raise InputError(f"--max-colors {max_colors}: expected 1 to {MAX_COLORS} colours, or 0 "
                         "for full RGB")
    cfg = load_config(config_file, opts, weights=checkpoint, cpu_if_no_cuda=True)
    check_rsp_config(cfg, config_file, need_relations=True)
    check_checkpoint(checkpoint)
    if (baseline_config is None) != (baseline_checkpoint is None):
        raise InputError("--baseline-config and --baseline-checkpoint go together: give both "
                         "or neither")
    base_cfg = None
    if baseline_config is not None:
        base_cfg = load_config(baseline_config, opts, weights=baseline_checkpoint,
                               cpu_if_no_cuda=True)
        check_rsp_config(base_cfg, baseline_config, need_relations=False)
        check_checkpoint(baseline_checkpoint, "baseline checkpoint")
    image = read_image(image_path, format="BGR")
    height, width = image.shape[:2]
    pixels = list(pixels) or grid_pixels(height, width, grid)
    bad = [p for p in pixels if not (0 <= p[0] < height and 0 <= p[1] < width)]
    if bad:
        raise InputError(f"pixels {bad} lie outside {image_path} ({height} x {width}); give y,x "
                         f"with 0 <= y < {height}, 0 <= x < {width}")

    trace = trace_head(Predictor(cfg), image)
    if content is not None:
        from .relation_content import trace_relation_content

        content.update(trace_relation_content(trace))
    models: List = [(_config_name(config_file), trace)]
    note = "baseline not given (--baseline-config/--baseline-checkpoint): RSP column only"
    if base_cfg is not None:
        models.append((_config_name(baseline_config), trace_head(Predictor(base_cfg), image)))
        note = ""

    # The propagation figure first: it refuses a --channel a model lacks, which must not leave
    # the other two figures written.
    propagation = draw_propagation(models, channel, note)
    save_figure(draw_relations(trace, pixels, background), paths["relations"],
                max_colors=max_colors)
    save_figure(draw_query_key(trace), paths["query_key"], max_colors=max_colors)
    save_figure(propagation, paths["propagation"], max_colors=max_colors)
    return paths
