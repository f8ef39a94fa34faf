"""The config keys of the RSP head and of this project's training recipe, and the one way the
package loads a config file."""
import difflib
import os
import re
from typing import Iterator, Optional, Sequence

import torch

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .model_zoo import resolve_config_path
from .utils.errors import InputError

__all__ = ["add_rsp_config", "load_config"]


def add_rsp_config(cfg):
    """Add the config keys of the RSP head (and of this project's training recipe) to `cfg`.

    The head itself is selected with ``MODEL.SEM_SEG_HEAD.NAME: "RSPHead"``; it reads the
    standard keys IN_FEATURES, NUM_CLASSES, CONVS_DIM, NORM, LOSS_WEIGHT and IGNORE_VALUE of
    MODEL.SEM_SEG_HEAD as well.
    """
    rsp = cfg.MODEL.SEM_SEG_HEAD.RSP = CN()
    # Fusion of each adjacent pair of IN_FEATURES levels, top-down (first entry fuses the two
    # coarsest levels); each a name of rsp_d2.layers.FUSIONS: "sum" | "rsp" | "self" | "context"
    # (Table IV) as shipped.
    # RSP-2 on p2-p5: [rsp, rsp, sum]; RSP-4 on p2-p7: [rsp, rsp, rsp, rsp, sum].
    rsp.FUSION = ["rsp", "rsp", "sum"]
    # Side k of the k x k region of the upsampled high-level map each pixel relates to (odd).
    rsp.KERNEL_SIZE = 7
    # Spacing of the region's samples; the paper's "-D" models use kernel 3, dilation 3.
    rsp.DILATION = 1
    # Factor d by which f_q and f_k reduce the channels (Table V(b)).
    rsp.REDUCTION = 2
    # Number of channel groups with their own softmax (the paper uses 1).
    rsp.NUM_HEADS = 1
    # Add the projected relative-position embedding f_p(p) to the key (Eq. 3).
    rsp.POS_EMBEDDING = True
    # Implementation of the relation: "auto" (the first that runs on the device and dtype, in the
    # order of rsp_d2/layers/rse_backends.py) or a name of rsp_d2.layers.rse_impl_names();
    # `python -m rsp_d2.collect_env` lists them and why each does or does not run here.
    rsp.IMPL = "auto"
    # Per-pixel loss: "cross_entropy" or "bootstrapped" (cross entropy over the hardest pixels).
    rsp.LOSS_TYPE = "cross_entropy"
    # Fraction of pixels (the hardest ones) kept by the bootstrapped loss.
    rsp.LOSS_TOP_K = 0.2

    # The data recipe of Sec. IV-A, read by rsp_d2.engine (Detectron2 ignores these keys).
    # Train-time mapper: "default" is Detectron2's DatasetMapper (used for COCO panoptic),
    # "rsp_semantic" is rsp_d2.data.RSPSemanticDatasetMapper (the Cityscapes recipe).
    cfg.INPUT.DATASET_MAPPER_NAME = "default"
    # SSD photometric distortion (brightness, contrast, saturation, hue) in the semantic mapper.
    cfg.INPUT.COLOR_AUG_SSD = False
    # Crop bootstrapping: redraw a crop (up to 10 times) while one class covers more than this
    # fraction of its labelled pixels; 1.0 turns it off.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # This project's training-loop keys.
    cfg.RSP_D2 = CN()
    # Iterations between the metric printer/json writer outputs (DefaultTrainer hard-codes 20).
    cfg.RSP_D2.LOG_PERIOD = 20
    # Semantic evaluation also writes confusion_matrix.{json,png} into the inference folder.
    cfg.TEST.CONFUSION_MATRIX = False
    # Semantic evaluation also scores the pixels within this many pixels of a ground-truth class
    # boundary ("sem_seg_band" in the results; rsp_d2/evaluation/boundary_band.py); 0: off.
    cfg.TEST.BOUNDARY_BAND = 0
    # Evaluate under torch.autocast: bfloat16 on the CPU, float16 on CUDA (as SOLVER.AMP trains).
    cfg.TEST.AMP = CN({"ENABLED": False})


def load_config(config_file: str, opts: Sequence[str] = (), *, weights: Optional[str] = None,
                freeze: bool = True, cpu_if_no_cuda: bool = False):
    """A Detectron2 config with the RSP keys, merged from `config_file`, then `opts`
    (KEY VALUE pairs), then `weights` as MODEL.WEIGHTS when given.

    Args:
        cpu_if_no_cuda: set MODEL.DEVICE to "cpu" when CUDA is unavailable, so that the
            inference tools run GPU-trained configs anywhere.

    A repository-relative ``configs/...`` path that is not a file here is one of the configs
    rsp_d2 ships (:func:`rsp_d2.model_zoo.get_config_file`).

    Raises:
        InputError: the file is missing, or it or `opts` cannot be merged (unknown key, bad
            value); the message names the file or the override.
    """
    config_file = resolve_config_path(config_file)  # configs/... from an installed package
    if not os.path.isfile(config_file):
        raise InputError(f"config file not found: {config_file} (expected a Detectron2 .yaml)")
    cfg = get_cfg()
    add_rsp_config(cfg)
    try:
        cfg.merge_from_file(config_file)
    except Exception as e:  # yaml or key errors: say which file
        raise InputError(f"config file {config_file} (or one of its _BASE_ files): "
                         f"{_explain(e, cfg)}") from e
    opts = list(opts)
    if len(opts) % 2:
        raise InputError(f"overrides {opts}: expected KEY VALUE pairs, got an odd number of "
                         f"items (the last, {opts[-1]!r}, has no value)")
    try:
        cfg.merge_from_list(opts)
    except Exception as e:
        raise InputError(f"command-line override: {_explain(e, cfg)}") from e
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    if cpu_if_no_cuda and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg


def _full_keys(node, prefix: str = "") -> Iterator[str]:
    for name, value in node.items():
        key = prefix + name
        yield key
        if isinstance(value, CN):
            yield from _full_keys(value, key + ".")


def _explain(error: Exception, cfg) -> str:
    """One line for a yacs merge error; an unknown key comes with the nearest valid ones."""
    text = " ".join(str(error.args[0] if error.args else error).split())
    match = re.search(r"Non-existent (?:config )?key: (\S+)", text)
    if match is None:
        return f"{type(error).__name__}: {text}"
    key = match.group(1)
    close = difflib.get_close_matches(key, list(_full_keys(cfg)), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return (f"unknown config key {key}{hint} (the keys are defined in "
            "detectron2/config/defaults.py and rsp_d2/config.py)")
