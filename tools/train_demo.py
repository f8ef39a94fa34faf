#!/usr/bin/env python
"""The demo (`make demo`): RSP-4 trained from scratch on the CPU on synthetic Cityscapes.

    python tools/train_demo.py [--data-root datasets/synthetic] [--output-dir output/demo_rsp4_R18]
                             [KEY VALUE ...config overrides]

1. generates the synthetic Cityscapes once (kept under --data-root for later runs);
2. trains configs/synthetic/rsp4_R18.yaml with train_net.py's code path, in this process;
3. evaluates with the official Cityscapes script and Detectron2's SemSegEvaluator, and prints
   per-class IoU from both;
4. writes image | ground truth | prediction overlays to OUTPUT_DIR/overlays/.

Both folders are created if missing; they, and the arguments, are checked before step 1.
"""
import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--data-root", default=os.path.join(REPO, "datasets", "synthetic"),
                        help="where the synthetic datasets are (made if missing)")
    parser.add_argument("--config-file",
                        default="configs/synthetic/rsp4_R18.yaml")  # shipped: found anywhere
    parser.add_argument("--output-dir", default=os.path.join(REPO, "output", "demo_rsp4_R18"))
    parser.add_argument("--num-overlays", type=int, default=4, help="val images to draw (>= 0)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    # Detectron2 binds its builtin dataset names to this variable when first imported, and
    # importing rsp_d2 imports it: set before the package's first import.
    data_root = os.path.abspath(args.data_root)
    os.environ["DETECTRON2_DATASETS"] = data_root
    from rsp_d2.utils.errors import InputError, exit_with_error

    try:
        return _run(args, data_root, start)
    except InputError as e:  # a bad argument, or one that train_net.py's checks refuse
        exit_with_error(e)


def _run(args, data_root, start):
    from rsp_d2.utils.errors import InputError
    from rsp_d2.utils.paths import check_output_dir

    if args.num_overlays < 0:  # a negative count would slice off the last images instead
        raise InputError(f"--num-overlays {args.num_overlays}: expected an integer >= 0")
    check_output_dir(args.data_root, "--data-root")
    check_output_dir(args.output_dir, "--output-dir")

    from rsp_d2.data.synthetic import generate_datasets
    from rsp_d2.config import load_config
    from rsp_d2.engine import argument_parser, run
    from rsp_d2.evaluation.report import format_semantic_results
    from rsp_d2.visualization.overlays import save_overlays

    print(f"[1/4] synthetic Cityscapes under {data_root}", flush=True)
    made = generate_datasets(data_root, only="cityscapes")["cityscapes"]
    print("      generated" if made else "      already there, reused", flush=True)

    train_argv = ["--config-file", args.config_file, "OUTPUT_DIR", args.output_dir] + args.opts
    print("[2/4] training from scratch on the CPU, i.e.\n      DETECTRON2_DATASETS="
          f"{data_root} python train_net.py {' '.join(train_argv)}", flush=True)
    train_args = argument_parser().parse_args(train_argv)
    run(train_args)

    print("[3/4] evaluation (after the last iteration)", flush=True)
    cfg = load_config(train_args.config_file, train_args.opts or [])
    with open(os.path.join(cfg.OUTPUT_DIR, "inference", "results.json")) as f:
        results = json.load(f)
    from detectron2.data import MetadataCatalog

    dataset = cfg.DATASETS.TEST[0]
    print(format_semantic_results(results, MetadataCatalog.get(dataset).stuff_classes))

    print("[4/4] prediction overlays", flush=True)
    paths = save_overlays(cfg, os.path.join(cfg.OUTPUT_DIR, "model_final.pth"), dataset,
                          os.path.join(cfg.OUTPUT_DIR, "overlays"), args.num_overlays)
    for p in paths:
        print(f"      {p}")
    print(f"official Cityscapes mIoU {results['cityscapes_sem_seg']['IoU']:.1f}%, "
          f"SemSegEvaluator mIoU {results['sem_seg']['mIoU']:.1f}%; "
          f"total wall time {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
