"""Every check of a ``train_net.py`` run that can fail on a user mistake, done once in the
launching process before any worker is spawned and before anything is written.

Without these, a misconfigured run fails in each spawned process, deep in a traceback, after
``config.yaml`` and ``log.txt`` were written (or, worse, runs on with random weights).
"""
import copy
import os
from typing import Optional, Tuple

import torch

from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from ..config import load_config
from ..layers.rse import get_rse_impl
from ..utils.errors import InputError
from .checkpoint import AtomicDetectionCheckpointer, check_checkpoint, model_config_of
from .dataset_checks import check_datasets, datasets_of
from .resume import require_checkpoint

__all__ = ["checkpoint_to_load", "preflight"]


def checkpoint_to_load(cfg, *, resume: bool, eval_only: bool) -> Tuple[Optional[str], bool]:
    """(path, strict) of what a run loads: the last checkpoint of OUTPUT_DIR with --resume,
    MODEL.WEIGHTS otherwise (None when empty); strict (the checkpoint must fit the model
    exactly) unless training starts from MODEL.WEIGHTS, where Detectron2's partial loading of
    e.g. ImageNet weights is intended."""
    if resume:
        return require_checkpoint(cfg.OUTPUT_DIR), True
    if eval_only:
        check_checkpoint(cfg.MODEL.WEIGHTS)
        return cfg.MODEL.WEIGHTS, True
    if cfg.MODEL.WEIGHTS and "://" not in cfg.MODEL.WEIGHTS:
        check_checkpoint(cfg.MODEL.WEIGHTS)
    return cfg.MODEL.WEIGHTS or None, False


def preflight(args):
    """The frozen config of `args` (train_net's parsed arguments), once every check passed.

    Raises:
        InputError: the config file, a key, the model, MODEL.DEVICE, RSP.IMPL, OUTPUT_DIR, the
            batch size, a frozen-statistics backbone without weights, the checkpoint to load.
        DatasetNotFoundError: a dataset's files are missing.
    """
    cfg = load_config(args.config_file, args.opts or [])
    _check_batch(cfg, args.num_gpus * args.num_machines, args.eval_only)
    _check_output_dir(cfg.OUTPUT_DIR)
    _check_device(cfg)
    model = _build_on_cpu(cfg, args.config_file)
    path, strict = checkpoint_to_load(cfg, resume=args.resume, eval_only=args.eval_only)
    if path is None and not args.eval_only:
        _check_trainable_from_scratch(model)
    if path is not None:
        AtomicDetectionCheckpointer(model, model_config=model_config_of(cfg),
                                    strict=strict).load(path, checkpointables=[])
    check_datasets(datasets_of(cfg, eval_only=args.eval_only))
    return cfg


def _check_batch(cfg, world_size: int, eval_only: bool):
    if not eval_only and cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise InputError(
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the number of "
            f"processes {world_size} (--num-gpus x --num-machines): each process takes an equal "
            "share of the batch")


def _check_output_dir(output_dir: str):
    if not output_dir:
        raise InputError("OUTPUT_DIR is empty: expected the folder of the run's checkpoints")
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"OUTPUT_DIR {output_dir} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"OUTPUT_DIR {output_dir} cannot be written: no write permission on "
                         f"{existing}")


def _check_device(cfg):
    device = cfg.MODEL.DEVICE
    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise InputError(f"MODEL.DEVICE {device!r}: {e} (expected 'cpu' or 'cuda')") from e
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"MODEL.DEVICE {device!r} but no CUDA device is visible: add "
                         "MODEL.DEVICE cpu to train on the CPU")
    impl = cfg.MODEL.SEM_SEG_HEAD.RSP.IMPL
    if impl == "auto":
        return
    try:
        registered = get_rse_impl(impl)
    except ValueError as e:
        raise InputError(f"MODEL.SEM_SEG_HEAD.RSP.IMPL {impl!r}: {str(e).split(': ', 1)[1]}") \
            from e
    probe = torch.zeros(1, 1, 1, 1, device=device)
    if not registered.is_available(probe):
        raise InputError(f"MODEL.SEM_SEG_HEAD.RSP.IMPL {impl!r} cannot run on MODEL.DEVICE "
                         f"{device!r} (float32) here: choose 'auto' or another implementation")


def _build_on_cpu(cfg, config_file: str) -> torch.nn.Module:
    """The model of `cfg`, built on the CPU (no GPU memory taken in the launcher)."""
    cpu_cfg = copy.deepcopy(cfg)
    cpu_cfg.defrost()
    cpu_cfg.MODEL.DEVICE = "cpu"
    try:
        return build_model(cpu_cfg)
    except (ValueError, AssertionError, KeyError, TypeError) as e:  # the modules' validation
        message = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"the model of {config_file} cannot be built: {message}") from e


def _check_trainable_from_scratch(model: torch.nn.Module):
    """Refuse a backbone with frozen batch-norm statistics and no weights to load."""
    backbone = getattr(model, "backbone", model)
    frozen = [n for n, m in backbone.named_modules() if isinstance(m, FrozenBatchNorm2d)]
    if frozen:
        raise InputError(
            f"the backbone has {len(frozen)} FrozenBN layers (e.g. {frozen[0]}) but MODEL.WEIGHTS "
            "is empty: frozen statistics of a random initialization normalize nothing and "
            "training diverges. Set MODEL.WEIGHTS to pretrained weights (e.g. "
            "detectron2://ImageNetPretrained/MSRA/R-50.pkl), or train the norm from scratch "
            "with MODEL.RESNETS.NORM GN (or SyncBN), as configs/demo/*.yaml do")
