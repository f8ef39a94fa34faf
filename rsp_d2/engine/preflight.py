"""Every check of a ``train_net.py`` run that can fail on a user mistake, done once in the
launching process before any worker is spawned and before anything is written.

Without these, a misconfigured run fails in each spawned process, deep in a traceback, after
``config.yaml`` and ``log.txt`` were written (or, worse, runs on with random weights).
"""
import copy
from typing import Dict, Optional, Tuple

import torch

from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from ..config import load_config
from ..layers.rse_registry import get_rse_impl
from ..utils.errors import InputError
from ..utils.paths import check_output_dir
from .checkpoint import (AtomicDetectionCheckpointer, check_checkpoint, local_checkpoint,
                         model_config_of)
from .dataset_checks import check_dataset_records, check_datasets, datasets_of
from .resume import require_checkpoint
from .safe_load import read_checkpoint

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


def preflight(args) -> Tuple[object, Dict[str, dict]]:
    """The frozen config of `args` (train_net's parsed arguments), once every check passed, and
    the checkpoint the run loads as {path: what the file holds} (empty when it loads none), so
    that a run in this process reads the file once.

    Raises:
        InputError: the config file, a key, the model, MODEL.DEVICE, RSP.IMPL, OUTPUT_DIR, the
            batch size, a frozen-statistics backbone without weights, the checkpoint to load.
        DatasetNotFoundError: a dataset's files are missing, or a split is empty or cannot be
            loaded.
        InputError: a dataset file cannot be read, or a label has another size than its image.
    """
    cfg = load_config(args.config_file, args.opts or [])
    _check_batch(cfg, args.num_gpus * args.num_machines, args.eval_only)
    if not args.eval_only:
        _check_schedule(cfg.SOLVER)
    check_output_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR")
    _check_device(cfg)
    model = _build_on_cpu(cfg, args.config_file)
    path, strict = checkpoint_to_load(cfg, resume=args.resume, eval_only=args.eval_only)
    if path is None and not args.eval_only:
        _check_trainable_from_scratch(model)
    preloaded = {}
    if path is not None:
        checkpointer = AtomicDetectionCheckpointer(model, model_config=model_config_of(cfg),
                                                   strict=strict)
        local = local_checkpoint(path)
        data = read_checkpoint(local)
        preloaded[local] = data
        # loading pops and edits the model entry: the check works on a copy
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            data = {**data, "model": dict(data["model"])}
        checkpointer.preloaded[local] = data
        checkpointer.load(local, checkpointables=[])
    check_datasets(datasets_of(cfg, eval_only=args.eval_only))
    check_dataset_records(cfg, eval_only=args.eval_only)
    return cfg, preloaded


def _check_batch(cfg, world_size: int, eval_only: bool):
    if not eval_only and cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise InputError(
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the number of "
            f"processes {world_size} (--num-gpus x --num-machines): each process takes an equal "
            "share of the batch")


def _check_schedule(solver):
    """What Detectron2's LR scheduler refuses, with a traceback, after files are written: steps
    must increase and (of those it keeps, the ones <= MAX_ITER) lie below MAX_ITER."""
    steps, max_iter = list(solver.STEPS), solver.MAX_ITER
    if max_iter < 1:
        raise InputError(f"SOLVER.MAX_ITER {max_iter}: expected a positive number of iterations")
    if solver.LR_SCHEDULER_NAME != "WarmupMultiStepLR":  # the others take no steps
        return
    if any(b <= a for a, b in zip(steps, steps[1:])) or any(s < 1 for s in steps):
        raise InputError(f"SOLVER.STEPS {tuple(steps)}: expected increasing positive iterations")
    if max_iter in steps:
        raise InputError(f"SOLVER.STEPS {tuple(steps)} includes SOLVER.MAX_ITER {max_iter}: a "
                         "step at the last iteration changes nothing; use steps below MAX_ITER "
                         "(steps beyond it are dropped)")


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
    why = registered.why_not(torch.zeros(1, 1, 1, 1, device=device))
    if why:
        raise InputError(f"MODEL.SEM_SEG_HEAD.RSP.IMPL {impl!r} cannot run on MODEL.DEVICE "
                         f"{device!r} (float32) here: {why}; choose 'auto' or another "
                         "implementation")


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
            "with MODEL.RESNETS.NORM GN (or SyncBN), as configs/synthetic/*.yaml do")
