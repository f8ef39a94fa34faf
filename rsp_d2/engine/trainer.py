"""``RSPTrainer``: Detectron2's DefaultTrainer with this project's data, evaluators and
checkpoints, and distributed training on CPU-only machines."""
import contextlib
import logging
import os

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import build_detection_test_loader, build_detection_train_loader
import detectron2.engine.defaults as d2_defaults
from detectron2.engine import DefaultTrainer, hooks
from detectron2.utils import comm

from ..data.mapper import build_mapper
from ..evaluation.build import build_evaluator
from ..utils.file_io import write_json_atomic
from .amp import TorchAMPTrainer
from .checkpoint import AtomicDetectionCheckpointer

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


@contextlib.contextmanager
def _swapped(module, **attributes):
    """Temporarily replace attributes of `module`."""
    saved = {name: getattr(module, name) for name in attributes}
    try:
        for name, value in attributes.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


class RSPTrainer(DefaultTrainer):
    """DefaultTrainer with:

    * the dataset mapper named by ``INPUT.DATASET_MAPPER_NAME`` (the Cityscapes recipe is
      "rsp_semantic"), in loaders whose errors name the failing file;
    * evaluators chosen by each test dataset's ``evaluator_type`` (:func:`build_evaluator`),
      results also saved to ``OUTPUT_DIR/inference/results.json``;
    * atomic checkpoint writes (:class:`AtomicDetectionCheckpointer`);
    * multi-process training on CPU (gloo) as well as GPU;
    * ``SOLVER.AMP.ENABLED`` on ``torch.amp`` (:class:`TorchAMPTrainer`: float16 on CUDA,
      bfloat16 on the CPU);
    * the metric printer every ``RSP_D2.LOG_PERIOD`` iterations.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__ wraps the model, picks the training loop and builds the
        # checkpointer itself, with the module-level create_ddp_model (GPU-only device_ids),
        # AMPTrainer (torch.cuda.amp, CUDA only) and DetectionCheckpointer; no builder method
        # reaches those, so they are swapped for the duration of the call.
        with _swapped(d2_defaults, create_ddp_model=lambda model, **_: wrap_ddp(model),
                      AMPTrainer=TorchAMPTrainer,
                      DetectionCheckpointer=AtomicDetectionCheckpointer):
            super().__init__(cfg)

    def build_hooks(self):
        period = self.cfg.RSP_D2.LOG_PERIOD
        return [hooks.PeriodicWriter(self.build_writers(), period=period)
                if isinstance(h, hooks.PeriodicWriter) else h for h in super().build_hooks()]

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
            write_json_atomic(path, results, indent=2, sort_keys=False)
            logging.getLogger(__name__).info(f"Evaluation results saved to {path}")
        return results
