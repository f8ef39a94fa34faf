"""What ``train_net.py`` runs: config setup, the per-process main, and the launch."""
import argparse
import contextlib
from typing import Dict, Optional

import torch.distributed as dist

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config
from ..utils.errors import InputError, print_error
from .checkpoint import AtomicDetectionCheckpointer, local_checkpoint, model_config_of
from .interrupt import (disk_full, disk_full_message, exit_status, interrupted_in, interruption_message,
                        sigterm_as_interrupt)
from .preflight import checkpoint_to_load, preflight
from .run_lock import output_dir_lock
from .trainer import RSPTrainer

__all__ = ["argument_parser", "cli", "main", "run", "setup"]



def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's ``default_argument_parser`` (--config-file, --num-gpus, --num-machines,
    --machine-rank, --dist-url, --resume, --eval-only, trailing KEY VALUE overrides)."""
    return default_argument_parser(epilog=(
        "Examples:\n"
        "  python train_net.py --config-file configs/cityscapes/rsp4_R50.yaml --num-gpus 8\n"
        "  python train_net.py --config-file CFG --resume             # continue a killed run\n"
        "  python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS out/model_final.pth\n"
        "  (machine i of 2) python train_net.py --config-file CFG --num-machines 2 "
        "--machine-rank i --dist-url tcp://HOST:PORT\n"
        "Builtin datasets (cityscapes_*, coco_*) are read under $DETECTRON2_DATASETS."))


def setup(args):
    """The config of `args`, with Detectron2's logging, seeding and config dump."""
    cfg = load_config(args.config_file, args.opts or [])
    default_setup(cfg, args)
    # default_setup configures the "detectron2" and "fvcore" loggers only
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="rsp_d2")
    return cfg


def main(args, preloaded: Optional[Dict[str, dict]] = None):
    """Train (or with --eval-only evaluate) in one process of a possibly distributed job.

    Args:
        preloaded: {path: content} of the checkpoint :func:`preflight` read in this process.
    """
    cfg = setup(args)
    if args.eval_only:
        model = RSPTrainer.build_model(cfg)
        path, strict = checkpoint_to_load(cfg, resume=args.resume, eval_only=True)
        checkpointer = AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, strict=strict,
                                                   model_config=model_config_of(cfg))
        checkpointer.preloaded.update(preloaded or {})
        checkpointer.load(local_checkpoint(path))
        with interrupted_in("evaluation"):
            result = RSPTrainer.test(cfg, model)
    else:
        trainer = RSPTrainer(cfg)
        trainer.checkpointer.preloaded.update(preloaded or {})
        trainer.resume_or_load(resume=args.resume)
        with interrupted_in(lambda: f"iteration {trainer.iter}"):
            result = trainer.train()
    _close_process_groups()
    return result


def _close_process_groups():
    """Destroy the process groups Detectron2's ``launch`` created, once every rank is done.

    Detectron2 leaves them to interpreter exit, where Gloo's worker threads can still hold
    work: the process then aborts ("terminate called without an active exception", SIGABRT)
    after a complete run, seen with torch 2.14 (pytorch/pytorch#190489, #179291). PyTorch's
    documented shutdown is this call at the end of each trainer process.
    """
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()


def run(args):
    """Check everything a user can get wrong once (:func:`preflight`), then ``launch``
    :func:`main` on every process of this machine.

    Without a GPU, Detectron2's ``launch`` initializes the gloo backend and :class:`RSPTrainer`
    wraps the model for CPU, so ``--num-gpus N`` means N CPU processes.
    """
    cfg, preloaded = preflight(args)
    # spawned processes read the checkpoint themselves
    preloaded = preloaded if args.num_gpus * args.num_machines == 1 else None
    # one machine's launcher guards the folder (a shared one's lock would block the others)
    lock = output_dir_lock(cfg.OUTPUT_DIR) if args.machine_rank == 0 else contextlib.nullcontext()
    with lock:
        return launch(main, args.num_gpus, num_machines=args.num_machines,
                      machine_rank=args.machine_rank, dist_url=args.dist_url,
                      args=(args, preloaded))


def cli(argv=None) -> int:
    """``train_net.py``: parse `argv`, :func:`run`. Ends with one ``error: ...`` line on
    stderr and no traceback on a user error or a full disk (exit status 2), on Ctrl-C (130) and
    on SIGTERM (143), saying what to do next."""
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        with sigterm_as_interrupt():
            run(args)
    except InputError as e:
        return _fail(e, 2)
    except KeyboardInterrupt as e:
        return _fail(interruption_message(e, args), exit_status(e))
    except Exception as e:
        full = disk_full(e)
        if full is None:
            raise
        return _fail(disk_full_message(full, args), 2)
    return 0


def _fail(message, status: int) -> int:
    print_error(message)
    return status
