#!/usr/bin/env python
"""Generate small synthetic Cityscapes and COCO-panoptic datasets in their real on-disk layouts.

    python tools/make_synthetic_datasets.py --root datasets_synthetic
    export DETECTRON2_DATASETS=datasets_synthetic   # then e.g. cityscapes_fine_sem_seg_train loads

Writes ROOT/cityscapes and ROOT/coco crash-safely (ROOT is created if missing); re-running with
the same arguments is a fast no-op, other arguments regenerate. All logic lives in
``rsp_d2.data.synthetic``.
"""

import argparse
import os
import time


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--root", required=True, help="folder to use as DETECTRON2_DATASETS")
    parser.add_argument("--seed", type=int, default=0,
                        help="an integer >= 0; same seed -> identical bytes")
    parser.add_argument("--num-train", type=_positive_int, help="train images per dataset")
    parser.add_argument("--num-val", type=_positive_int, help="val images per dataset")
    parser.add_argument("--only", choices=("cityscapes", "coco"), help="make just one dataset")
    args = parser.parse_args(argv)

    # Imported after parsing so that --help and usage errors do not pay for torch/detectron2.
    from rsp_d2.data.synthetic import DEFAULT_SIZES, generate_datasets
    from rsp_d2.utils.errors import InputError, exit_with_error
    from rsp_d2.utils.paths import check_output_dir

    start = time.perf_counter()
    try:
        if args.seed < 0:  # numpy's seed sequences take non-negative integers only
            raise InputError(f"--seed {args.seed}: expected an integer >= 0")
        check_output_dir(args.root, "--root")
        done = generate_datasets(
            args.root,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            only=args.only,
        )
    except (FileExistsError, InputError) as e:
        exit_with_error(e)
    for name, built in done.items():
        n_train = args.num_train or DEFAULT_SIZES[name][0]
        n_val = args.num_val or DEFAULT_SIZES[name][1]
        state = "generated" if built else "already complete, left as is"
        print(f"{os.path.join(args.root, name)}: {n_train} train + {n_val} val images, {state}")
    elapsed = time.perf_counter() - start
    print(f"done in {elapsed:.1f}s; use DETECTRON2_DATASETS={os.path.abspath(args.root)}")


if __name__ == "__main__":
    main()
