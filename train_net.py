#!/usr/bin/env python
"""Train and evaluate RSP models with Detectron2 (see rsp_d2.engine).

    python train_net.py --config-file configs/cityscapes/rsp4_R50.yaml --num-gpus 8
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS model_final.pth

Builtin datasets are read under $DETECTRON2_DATASETS, which must be set before launching.
"""
import sys

from rsp_d2.engine import cli

if __name__ == "__main__":
    sys.exit(cli())
