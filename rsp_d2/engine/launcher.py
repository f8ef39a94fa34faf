"""What ``train_net.py`` runs: config setup, the per-process main, and the launch."""
import argparse

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import load_config
from .checkpoint import AtomicDetectionCheckpointer
from .dataset_checks import check_datasets, datasets_of
from .trainer import RSPTrainer

__all__ = ["argument_parser", "load_cfg", "main", "run", "setup"]


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
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        return RSPTrainer.test(cfg, model)
    trainer = RSPTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(args):
    """Check the datasets once, then ``launch`` :func:`main` on every process of this machine.

    Without a GPU, Detectron2's ``launch`` initializes the gloo backend and :class:`RSPTrainer`
    wraps the model for CPU, so ``--num-gpus N`` means N CPU processes.
    """
    check_datasets(datasets_of(load_cfg(args), eval_only=args.eval_only))
    return launch(main, args.num_gpus, num_machines=args.num_machines,
                  machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
