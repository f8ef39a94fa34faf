#!/usr/bin/env python
"""Pretrain the demo's ResNet-18 once, as the paper starts from ImageNet weights (Sec. IV-A),
and cache it as a Detectron2 checkpoint that the miniature comparison starts every run from.

    OMP_NUM_THREADS=1 python tools/pretrain_backbone.py --output output/pretrain_R18 \
        --data-root datasets/synthetic_pretrain --benchmark-root datasets/synthetic_cmp96

1. generates a synthetic Cityscapes of its own seed (default 1000; the benchmark's is 0) and
   --num-train images, and checks that none of its images is an image of the benchmark's val
   split (--benchmark-root);
2. trains the demo model with the sum head on Q2-Q5 (the cheapest head: only the backbone is
   kept) for --iters iterations, with train_net.py's code path;
3. writes OUTPUT/R18_synthetic_seedS.pth: ``{"model": {"backbone.bottom_up.*": tensor}}``,
   which MODEL.WEIGHTS loads into any demo variant (Q2-Q5 or P2-P7; FPN and head stay as the
   run's SEED initializes them). The same seed, sizes and machine type give the same weights.

A finished cache is kept: rerunning prints its path and trains nothing.
"""
import argparse
import glob
import hashlib
import os
import sys
import time

CONFIG = "configs/synthetic/rsp4_R18.yaml"  # shipped with rsp_d2: found anywhere
# the head the backbone is trained with: the mini preset's sum baseline (Q2-Q5)
SUM_HEAD = ["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
            "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['p2','p3','p4','p5']",
            "MODEL.SEM_SEG_HEAD.RSP.FUSION", "['sum','sum','sum']"]


def parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="folder of the training run and the cache")
    p.add_argument("--data-root", required=True, help="where its own synthetic data go")
    p.add_argument("--benchmark-root", default=None,
                   help="DETECTRON2_DATASETS of the benchmark, whose val images must not occur")
    p.add_argument("--seed", type=int, default=1000, help="data and training seed (not 0)")
    p.add_argument("--num-train", type=int, default=256)
    p.add_argument("--iters", type=int, default=1200)  # the published comparison's backbone
    return p


def cache_path(output: str, seed: int) -> str:
    return os.path.join(output, f"R18_synthetic_seed{seed}.pth")


def _image_hashes(root: str, split: str):
    paths = glob.glob(os.path.join(root, "cityscapes", "leftImg8bit", split, "*", "*.png"))
    hashes = {}
    for path in paths:
        with open(path, "rb") as f:
            hashes[hashlib.sha256(f.read()).hexdigest()] = path
    return hashes


def check_disjoint(pretrain_root: str, benchmark_root: str) -> int:
    """The number of benchmark val images checked; InputError if one is a pretraining image."""
    from rsp_d2.utils.errors import InputError

    val = _image_hashes(benchmark_root, "val")
    if not val:
        raise InputError(f"--benchmark-root {benchmark_root}: no val images under "
                         "cityscapes/leftImg8bit/val")
    ours = {**_image_hashes(pretrain_root, "train"), **_image_hashes(pretrain_root, "val")}
    shared = sorted(set(ours) & set(val))
    if shared:
        raise InputError(f"{len(shared)} pretraining images are benchmark val images (e.g. "
                         f"{ours[shared[0]]} = {val[shared[0]]}): use another --seed")
    return len(val)


def main(argv=None):
    args = parser().parse_args(argv)
    # Detectron2 binds its builtin dataset names to this variable when first imported
    os.environ["DETECTRON2_DATASETS"] = os.path.abspath(args.data_root)
    from rsp_d2.utils.errors import InputError, exit_with_error

    try:
        return _run(args)
    except InputError as e:
        exit_with_error(e)


def _run(args):
    import torch

    from rsp_d2.data.synthetic import generate_datasets
    from rsp_d2.engine import argument_parser, run
    from rsp_d2.engine.safe_load import read_checkpoint
    from rsp_d2.utils.errors import InputError
    from rsp_d2.utils.file_io import AtomicWriter
    from rsp_d2.utils.paths import check_output_dir

    if args.seed <= 0 or args.num_train < 1 or args.iters < 1:
        raise InputError("--seed must be > 0 (0 is the benchmark's), --num-train and --iters "
                         ">= 1")
    check_output_dir(args.output, "--output")
    check_output_dir(args.data_root, "--data-root")
    target = cache_path(args.output, args.seed)
    if os.path.isfile(target):
        made = read_checkpoint(target).get("pretraining", {})
        asked = {"seed": args.seed, "num_train": args.num_train, "iters": args.iters}
        if made != asked:
            raise InputError(f"{target}: cached from a pretraining with {made}, asked for "
                             f"{asked}: use another --output")
        print(f"cached: {target}")
        return 0
    start = time.perf_counter()
    generate_datasets(args.data_root, seed=args.seed, num_train=args.num_train, num_val=8,
                      only="cityscapes")
    if args.benchmark_root:
        checked = check_disjoint(args.data_root, args.benchmark_root)
        print(f"none of the {checked} benchmark val images is a pretraining image")
    # the demo's LR steps, at the same fractions of the schedule
    steps = sorted({s for s in (int(args.iters * 0.75), int(args.iters * 0.92)) if
                    0 < s < args.iters})
    run_dir = os.path.join(args.output, f"train_seed{args.seed}")
    run(argument_parser().parse_args([
        "--config-file", CONFIG, *SUM_HEAD, "SOLVER.MAX_ITER", str(args.iters),
        "SOLVER.STEPS", str(tuple(steps)), "SOLVER.CHECKPOINT_PERIOD", str(args.iters), "SEED",
        str(args.seed), "OUTPUT_DIR", run_dir]))
    weights = read_checkpoint(os.path.join(run_dir, "model_final.pth"))["model"]
    backbone = {k: v for k, v in weights.items() if k.startswith("backbone.bottom_up.")}
    with AtomicWriter(target, "wb") as f:
        torch.save({"model": backbone, "__author__": "rsp_d2 tools/pretrain_backbone.py",
                    "pretraining": {"seed": args.seed, "num_train": args.num_train,
                                    "iters": args.iters}}, f)
    print(f"wrote {target} ({len(backbone)} tensors) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
