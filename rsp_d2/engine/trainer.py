"""``RSPTrainer``: Detectron2's DefaultTrainer with this project's data, evaluators and
checkpoints, and distributed training on CPU-only machines."""
import json
import logging
import os
import weakref

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data.mapper import build_mapper
from .checkpoint import AtomicDetectionCheckpointer, AtomicWriter
from .evaluation import build_evaluator

__all__ = ["RSPTrainer", "wrap_ddp"]


def wrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel when there are >1 processes, on GPU or CPU.

    Detectron2's ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which DDP
    rejects for a CPU module; CPU (gloo) needs ``device_ids=None``.
    """
    if comm.get_world_size() == 1:
        return model
    on_gpu = next(model.parameters()).device.type == "cuda"
    return DistributedDataParallel(model, device_ids=[comm.get_local_rank()] if on_gpu else None,
                                   broadcast_buffers=False)


class RSPTrainer(DefaultTrainer):
    """DefaultTrainer with:

    * the dataset mapper named by ``INPUT.DATASET_MAPPER_NAME`` (the Cityscapes recipe is
      "rsp_semantic"), in loaders whose errors name the failing file;
    * evaluators chosen by each test dataset's ``evaluator_type`` (:func:`build_evaluator`),
      results also saved to ``OUTPUT_DIR/inference/results.json``;
    * atomic checkpoint writes (:class:`AtomicDetectionCheckpointer`);
    * multi-process training on CPU (gloo) as well as GPU;
    * the metric printer every ``LOG_PERIOD`` iterations.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__, with the DDP wrapper and checkpointer replaced: it wraps
        # the model itself, so overriding a builder method cannot fix the CPU case.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = wrap_ddp(model)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicDetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        ret = super().build_hooks()
        for hook in ret:
            if isinstance(hook, hooks.PeriodicWriter):
                hook._period = self.cfg.LOG_PERIOD  # DefaultTrainer.build_hooks hard-codes 20
        return ret

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name,
                                           mapper=build_mapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process() and cfg.OUTPUT_DIR and len(cfg.DATASETS.TEST):
            path = os.path.join(cfg.OUTPUT_DIR, "inference", "results.json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with AtomicWriter(path, "w") as f:
                json.dump(results, f, indent=2)
            logging.getLogger(__name__).info(f"Evaluation results saved to {path}")
        return results
