#!/usr/bin/env python
r"""Plot training curves of one or more runs from Detectron2's metrics.json.

    python tools/plot_metrics.py output/demo_rsp4_R18 [output/other_run/metrics.json ...] \
        --output curves.png [--keys total_loss lr sem_seg/mIoU]

Each argument is a run folder (holding metrics.json) or a metrics file; a run is named after
its folder. Default keys: every loss, "lr", and the evaluation summaries ("<evaluator>/<metric>"
without per-class ones). One subplot per group (losses, learning rate, each evaluator), stacked:
the PNG is 1200 x (60 + 300 S) pixels for S subplots. The folder of --output is created if
missing.
"""
import argparse

from rsp_d2.visualization.figures import save_figure
from rsp_d2.utils.errors import InputError, exit_with_error
from rsp_d2.utils.paths import check_output_file
from rsp_d2.visualization.metrics import load_run, metrics_figure_size, plot_metrics


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_METRICS_JSON")
    p.add_argument("--output", required=True, metavar="PNG")
    p.add_argument("--keys", nargs="+", default=None, help="metrics to plot (default: see above)")
    args = p.parse_args(argv)
    try:
        check_output_file(args.output, "--output", create_parents=True)
        runs = [load_run(r) for r in args.runs]
        fig = plot_metrics(runs, args.keys)
        num_subplots = len(fig.axes)
        save_figure(fig, args.output)
    except InputError as e:
        exit_with_error(e)
    w, h = metrics_figure_size(num_subplots)
    print(f"wrote {args.output} ({w} x {h}, {len(runs)} runs)")


if __name__ == "__main__":
    main()
