#!/usr/bin/env python
"""Export a model with the RSP head to ONNX or TorchScript, and check it against PyTorch.

    python tools/export_model.py --config-file configs/cityscapes/rsp4_R50.yaml \
        --format onnx --output rsp4.onnx --sample-image frame.png MODEL.WEIGHTS model_final.pth

    python tools/export_model.py --config-file configs/coco/panoptic_rsp4.yaml \
        --format onnx --output panoptic_rsp4.onnx --sample-image frame.png MODEL.WEIGHTS model_final.pth

The exported graph takes a (1, 3, H, W) float32 image (0-255, INPUT.FORMAT channel order) of any
height and width (traced at the sample's) and returns (1, K, H, W) logits (or (1, H, W) labels
with --labels); a Panoptic FPN is exported whole: boxes, scores, classes, mask probabilities and
semantic logits, the panoptic combination running after the graph
(rsp_d2.export.panoptic_from_outputs); --semantic-only exports its semantic branch. See
rsp_d2.export.SemanticSegmentationAdapter and PanopticFPNAdapter for the contracts. Without
--sample-image a random image of --sample-size is traced. The exported model is run on the
sample and on an image one size-divisibility tile taller and wider (onnxruntime CPU /
torch.jit.load) and its difference from PyTorch printed for each.
"""
import argparse
import sys

import torch

from rsp_d2.config import load_config
from rsp_d2.engine.predictor import read_image
from rsp_d2.export import (EXPORT_METHODS, FORMATS, OPSET, CombineSettings, build_export_adapter,
                           check_export_args, export_model, image_to_tensor, second_size,
                           verify_export)
from rsp_d2.utils.errors import InputError, exit_with_error
from rsp_d2.utils.paths import check_output_file
from rsp_d2.utils.file_io import write_bytes_atomic


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--export-method", choices=EXPORT_METHODS, default="tracing",
                   help="torchscript: tracing (scripting is refused with the reason); onnx traces")
    p.add_argument("--output", required=True, help="file to write (.onnx or .ts)")
    p.add_argument("--sample-image", help="image whose size (and content) the export is traced with")
    p.add_argument("--sample-size", nargs=2, type=int, default=[1024, 2048], metavar=("H", "W"),
                   help="size of the random sample when no --sample-image is given")
    p.add_argument("--labels", action="store_true", help="output (1, H, W) class ids, not logits")
    p.add_argument("--semantic-only", action="store_true",
                   help="a Panoptic FPN: export its semantic branch alone (default: the whole model)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS x.pth")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_export_args(args.format, args.export_method)
        check_output_file(args.output, "--output")  # before minutes of export work
        cfg = load_config(args.config_file, args.opts)
        if args.sample_image:
            sample = image_to_tensor(read_image(args.sample_image, format=cfg.INPUT.FORMAT))
        else:
            h, w = args.sample_size
            if h < 1 or w < 1:
                raise InputError(f"--sample-size {h} {w}: expected two positive integers")
            sample = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255
        adapter = build_export_adapter(cfg, labels=args.labels, semantic_only=args.semantic_only)
        data = export_model(adapter, sample, args.format, args.export_method)
    except InputError as e:
        exit_with_error(e)
    write_bytes_atomic(args.output, data)
    what = f"opset {OPSET}" if args.format == "onnx" else "traced TorchScript"
    print(f"wrote {args.output} ({what}, {type(adapter).__name__}, traced at (1, 3, "
          f"{sample.shape[2]}, {sample.shape[3]}), height and width dynamic)")
    images = [sample, second_size(sample, adapter.size_divisibility)]
    for check in verify_export(adapter, data, args.format, images, CombineSettings.from_config(cfg)):
        size = check.pop("size")
        print(f"  vs PyTorch at {size[0]}x{size[1]}: "
              + ", ".join(f"{k} {v:.3g}" for k, v in check.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
