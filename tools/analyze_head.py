#!/usr/bin/env python
"""Multiply-adds and parameters of a config's semantic head (backbone and FPN excluded), or of
its whole model (--whole-model: backbone, FPN and head, as the paper's Table II counts).

    python tools/analyze_head.py --config-file configs/cityscapes/rsp4_R50.yaml
    python tools/analyze_head.py --config-file configs/cityscapes/rsp4_D_X101.yaml --whole-model
    python tools/analyze_head.py --paper-tables [--json out.json]
"""
import argparse
import sys

from rsp_d2.analysis.flops import count_head, count_model
from rsp_d2.analysis.paper_tables import FLOPS_TOLERANCE_G, format_rows, reproduce_rows
from rsp_d2.config import load_config
from rsp_d2.model_zoo import config_root
from rsp_d2.utils.errors import InputError, exit_with_error
from rsp_d2.utils.file_io import write_json_atomic
from rsp_d2.utils.paths import check_output_file



def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", help="config whose head to analyze")
    p.add_argument("--input-size", nargs=2, type=int, default=[1024, 2048], metavar=("H", "W"))
    p.add_argument("--whole-model", action="store_true",
                   help="with --config-file: count the backbone and FPN too (Table II)")
    p.add_argument("--paper-tables", action="store_true",
                   help="reproduce Tables I, IV, V(a), V(b) and VI of the paper")
    p.add_argument("--json", help="also write the numbers to this JSON file (in an existing "
                                  "folder)")
    args = p.parse_args(argv)
    if bool(args.config_file) == bool(args.paper_tables):
        p.error("give exactly one of --config-file and --paper-tables")
    if args.whole_model and not args.config_file:
        p.error("--whole-model counts the model of --config-file")
    h, w = args.input_size
    try:  # before the counting, which takes minutes for --paper-tables
        if h < 1 or w < 1:
            raise InputError(f"--input-size {h} {w}: expected two positive integers")
        if args.json is not None:
            check_output_file(args.json, "--json")
        cfg = load_config(args.config_file) if args.config_file else None
    except InputError as e:
        exit_with_error(e)

    if cfg is not None:
        r = (count_model if args.whole_model else count_head)(cfg, h, w, shrink=None)
        what = "whole model" if args.whole_model else "head"
        print(f"{args.config_file} at {h}x{w}: {what} {r['flops'] / 1e9:.3f} GFLOPs "
              f"(multiply-adds), {r['params'] / 1e6:.3f} M parameters")
        for name, f in r["by_module"].items():
            print(f"  {name:10s} {f / 1e9:8.3f} G")
        result, bad = r, []
    else:
        result = reproduce_rows(config_root(), height=h, width=w,
                                progress=lambda row: print(f"counting {row.config}", file=sys.stderr))
        print(f"Head FLOPs (multiply-adds) at {h}x{w}, tolerance {FLOPS_TOLERANCE_G}G")
        print(format_rows(result))
        bad = [r for r in result if not r["within_tolerance"] and not r["contradiction"]]
        if bad:
            print(f"\n{len(bad)} row(s) outside tolerance: {[r['config'] for r in bad]}")
    if args.json is not None:
        write_json_atomic(args.json, result, indent=1, sort_keys=False)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
