#!/usr/bin/env python
"""Convert COCO panoptic annotations to the semantic PNGs Panoptic FPN trains on.

Same output as Detectron2's datasets/prepare_panoptic_fpn.py: things -> 0, the 53 stuff
categories -> 1..53 in COCO_CATEGORIES order, unlabeled -> 255, one PNG per panoptic PNG.

    # a standard $DETECTRON2_DATASETS/coco tree, val2017 and train2017:
    python tools/prepare_panoptic_fpn.py --coco-root
    # or one annotation file:
    python tools/prepare_panoptic_fpn.py --panoptic-json coco/annotations/panoptic_val2017.json \\
        --panoptic-root coco/panoptic_val2017 --output-dir coco/panoptic_stuff_val2017
"""

import argparse
import os


def main(argv=None):
    default_coco = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "coco")
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.strip().splitlines()[1:]),
    )
    parser.add_argument(
        "--coco-root",
        nargs="?",
        const=default_coco,
        help=f"convert val2017 and train2017 under this COCO folder (default: {default_coco})",
    )
    parser.add_argument("--splits", nargs="+", default=["val2017", "train2017"],
                        help="splits for --coco-root")  # fmt: skip
    parser.add_argument("--panoptic-json", help="a panoptic_<split>.json")
    parser.add_argument("--panoptic-root", help="the folder of its panoptic PNGs")
    parser.add_argument("--output-dir", help="where to write the semantic PNGs (created if "
                                             "missing)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes to use")  # fmt: skip
    args = parser.parse_args(argv)
    single = (args.panoptic_json, args.panoptic_root, args.output_dir)
    if args.coco_root is not None and any(single):
        parser.error("use either --coco-root or --panoptic-json/--panoptic-root/--output-dir")
    if args.coco_root is None and not all(single):
        parser.error("need --coco-root, or all of --panoptic-json, --panoptic-root, --output-dir")

    from rsp_d2.data.coco_panoptic_stuff import convert_coco_root, convert_panoptic_json
    from rsp_d2.utils.errors import InputError, exit_with_error
    from rsp_d2.utils.paths import check_output_dir

    try:
        if args.workers < 1:
            raise InputError(f"--workers {args.workers}: expected a positive integer")
        # every output folder before the first PNG: a refusal leaves no split half converted
        if args.coco_root is not None:
            outputs = {split: os.path.join(args.coco_root, f"panoptic_stuff_{split}")
                       for split in args.splits}
            for out in outputs.values():
                check_output_dir(out, "output folder of --coco-root")
            done = convert_coco_root(args.coco_root, args.splits, workers=args.workers)
            for split, count in done.items():
                print(f"{split}: wrote {count} PNGs to {outputs[split]}")
        else:
            check_output_dir(args.output_dir, "--output-dir")
            count = convert_panoptic_json(*single, workers=args.workers)
            print(f"wrote {count} PNGs to {args.output_dir}")
    except (OSError, ValueError) as e:
        exit_with_error(e)


if __name__ == "__main__":
    main()
