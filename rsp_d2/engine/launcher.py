"""What ``train_net.py`` runs: config setup, the per-process main, and the launch."""
import argparse
import sys

import torch.distributed as dist

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config
from ..data.mapper import DatasetRecordError
from ..utils.errors import InputError
from .checkpoint import AtomicDetectionCheckpointer, model_config_of
from .dataset_checks import DatasetNotFoundError
from .preflight import checkpoint_to_load, preflight
from .trainer import RSPTrainer

__all__ = ["argument_parser", "cli", "load_cfg", "main", "run", "setup"]

# Raised for what the user can fix (config, paths, data, checkpoints, a diverging recipe):
# printed as one "error: ..." line with exit status 2; anything else keeps its traceback.
USER_ERRORS = (InputError, DatasetNotFoundError, DatasetRecordError)


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


def load_cfg(args):
    """The frozen config of `args` (config file + overrides, RSP keys added first)."""
    return load_config(args.config_file, args.opts or [])


def setup(args):
    """The config of `args`, with Detectron2's logging, seeding and config dump."""
    cfg = load_cfg(args)
    default_setup(cfg, args)
    # default_setup configures the "detectron2" and "fvcore" loggers only
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="rsp_d2")
    return cfg


def main(args):
    """Train (or with --eval-only evaluate) in one process of a possibly distributed job."""
    cfg = setup(args)
    if args.eval_only:
        model = RSPTrainer.build_model(cfg)
        path, strict = checkpoint_to_load(cfg, resume=args.resume, eval_only=True)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, strict=strict,
                                    model_config=model_config_of(cfg)).load(path)
        result = RSPTrainer.test(cfg, model)
    else:
        trainer = RSPTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
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
    preflight(args)
    return launch(main, args.num_gpus, num_machines=args.num_machines,
                  machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))


def _one_line(error: BaseException) -> str:
    """The message of a user error; one raised in a data-loader worker comes wrapped in the
    worker's traceback text, of which its last line is the message."""
    text = str(error)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return text


def cli(argv=None) -> int:
    """``train_net.py``: parse `argv`, :func:`run`; a user error prints ``error: ...`` on
    stderr and returns 2."""
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        run(args)
    except USER_ERRORS as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0
