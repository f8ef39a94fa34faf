#!/usr/bin/env python
"""Compare heads over seeds, the paper's protocol (median and std of 5 random runs).

    # the miniature benchmark of docs/MODEL_ZOO.md (CPU, synthetic Cityscapes, a backbone
    # pretrained once by tools/pretrain_backbone.py), two runs at a time
    python tools/make_synthetic_datasets.py --root datasets/synthetic_cmp96 --only cityscapes \
        --num-train 96 --num-val 64
    python tools/compare_heads.py --preset mini --seeds 0 1 2 --jobs 2 \
        --output output/compare_mini --data-root datasets/synthetic_cmp96
    # Table I/IV rows on the real Cityscapes, 8 GPUs per run
    python tools/compare_heads.py --preset cityscapes --seeds 0 1 2 3 4 --num-gpus 8 \
        --output output/compare_cityscapes
    # your own variants: --variant NAME CONFIG [KEY VALUE ...] (repeatable)
    # seeds until each contrast is known to +-1 mIoU (95 % interval), at most 10 seeds
    python tools/compare_heads.py --preset mini --seeds 0 1 2 3 --contrast rsp2:sum \
        --contrast rsp4:sum_p2p7 --precision 1.0 --max-seeds 10 --jobs 2 ...

Each (variant, seed) trains and evaluates like train_net.py into OUTPUT/VARIANT/seedS; finished
runs are skipped and unfinished ones resumed, so rerunning a killed comparison continues it;
with --output under docs/runs/, git keeps each run's record and another clone of the same CPU
type continues it too (docs/runs/README.md; runs of another CPU are refused, not paired).
Writes REPORT.json, REPORT.md (the tables) and REPORT.png (one point per seed; the contrasts);
REPORT defaults to OUTPUT/comparison. --collect-only writes the report of the runs finished so
far without training. Logic: rsp_d2.analysis.compare, compare_report, stats.
"""
import argparse
import os
import sys


def parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="named variants: mini, mini_table6, mini_scratch, "
                                     "cityscapes, table4, table6")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="of the preset, just these variants")
    p.add_argument("--variant", nargs="+", action="append", default=[],
                   metavar="NAME CONFIG [KEY VALUE]", help="a variant (repeatable)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                   help="distinct integers >= 0 (train_net.py's SEED)")
    p.add_argument("--output", required=True, help="folder of the runs (created if missing)")
    p.add_argument("--report", default=None, help="report path prefix (OUTPUT/comparison); its "
                                                  "folder is created if missing")
    p.add_argument("--reference", default=None, help="variant of the paired differences "
                                                     "(default: the first)")
    p.add_argument("--classes", nargs="+", default=None, help="classes whose IoU to show "
                                                              "(default rider person bicycle)")
    p.add_argument("--num-gpus", type=int, default=1, help="per run (train_net.py's)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once (CPU: each gets cores/JOBS threads unless "
                        "OMP_NUM_THREADS is set)")
    p.add_argument("--data-root", default=None, help="DETECTRON2_DATASETS of the runs")
    p.add_argument("--relation-images", type=int, default=4,
                   help="val images on which to score relation content (0: none)")
    p.add_argument("--contrast", action="append", default=[], metavar="A:B",
                   help="report the paired difference A - B (repeatable; default: every "
                        "variant against --reference)")
    p.add_argument("--precision", type=float, default=None, metavar="POINTS",
                   help="add seeds (after --seeds, one at a time, to every variant) until each "
                        "contrast's 95%% interval is at most +-POINTS mIoU, or --max-seeds")
    p.add_argument("--max-seeds", type=int, default=10, help="with --precision: the most seeds")
    p.add_argument("--collect-only", action="store_true", help="report, do not train")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    from rsp_d2.analysis.compare import parse_variant, plan, run_comparison
    from rsp_d2.analysis.compare_presets import preset_variants
    from rsp_d2.analysis.compare_report import (CONTEXT_CLASSES, collect, more_seeds,
                                                parse_contrast, write_report)
    from rsp_d2.utils.errors import InputError, exit_with_error
    from rsp_d2.utils.paths import check_output_dir, check_output_file

    try:
        variants = preset_variants(args.preset) if args.preset else []
        if args.only:
            unknown = sorted(set(args.only) - {v.name for v in variants})
            if unknown:
                raise InputError(f"--only {unknown}: not in --preset {args.preset!r} "
                                 f"({[v.name for v in variants]})")
            variants = [v for v in variants if v.name in args.only]
        variants += [parse_variant(t) for t in args.variant]
        if args.num_gpus < 1 or args.relation_images < 0 or args.jobs < 1:
            raise InputError("--num-gpus and --jobs must be >= 1 and --relation-images >= 0")
        if args.data_root is not None and not os.path.isdir(args.data_root):
            raise InputError(f"--data-root {args.data_root}: not a folder")
        negative = [s for s in args.seeds if s < 0]
        if negative:  # Detectron2 takes SEED < 0 as "pick a random seed": not reproducible
            raise InputError(f"--seeds {negative}: expected integers >= 0")
        report = args.report if args.report is not None else os.path.join(args.output,
                                                                           "comparison")
        if os.path.basename(report) in ("", ".", ".."):
            raise InputError(f"--report {report}: expected a path prefix such as "
                             "DIR/comparison (PREFIX.json, .md and .png are written)")
        # before any run trains: the report is written hours later
        check_output_dir(args.output, "--output")
        for ext in (".json", ".md", ".png"):
            check_output_file(report + ext, "--report", create_parents=True)
        contrasts = [parse_contrast(c) for c in args.contrast] or None
        if args.precision is not None and not (args.precision > 0 and
                                               args.max_seeds >= len(args.seeds)):
            raise InputError(f"--precision {args.precision} --max-seeds {args.max_seeds}: "
                             "expected a positive precision and at least as many seeds as "
                             "--seeds gives")
        seeds = list(args.seeds)
        while True:  # the stopping rule looks at interval widths only, never at significance
            if args.collect_only:  # reports runs, trains none: no starting weights needed
                plan(variants, seeds, need_weights=False)
            else:
                run_comparison(variants, seeds, args.output, num_gpus=args.num_gpus,
                               data_root=args.data_root, relation_images=args.relation_images,
                               jobs=args.jobs)
            results = collect(variants, seeds, args.output, reference=args.reference,
                              classes=args.classes or CONTEXT_CLASSES, contrasts=contrasts,
                              precision=args.precision)
            results["max_seeds"] = args.max_seeds if args.precision is not None else None
            more = None if args.collect_only or args.precision is None else \
                more_seeds(results, seeds, args.max_seeds)
            if more is None:
                break
            print(f"[more seeds] a contrast is wider than +-{args.precision}: seeds {more}")
            seeds = more
        paths = write_report(results, report)
    except InputError as e:
        exit_with_error(e)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    if results["missing"]:
        print(f"not finished: {', '.join(results['missing'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
