"""``RSPTrainer``: Detectron2's DefaultTrainer with this project's data, evaluators and
checkpoints, and distributed training on CPU-only machines."""
import contextlib
import functools
import logging
import os

import torch
from torch.nn.parallel import DistributedDataParallel

import detectron2.engine.defaults as d2_defaults
from detectron2.engine import DefaultTrainer, hooks
from detectron2.utils import comm

from ..data.build import uses_resumable_loader
from ..evaluation.build import build_evaluator
from ..utils.errors import InputError, TrainingDivergedError
from ..utils.file_io import remove_stale_temporaries, write_json_atomic
from .amp import TorchAMPTrainer, inference_autocast
from .checkpoint import AtomicDetectionCheckpointer, model_config_of
from .interrupt import disk_full
from .recipe import RSPDataMixin
from .resume import get_rng_state, require_checkpoint, set_rng_state, truncate_metrics

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


def _drop_user_error_tracebacks(record: logging.LogRecord) -> bool:
    # FloatingPointError: a NaN/Inf loss, re-raised by RSPTrainer.run_step as a user error; a
    # full disk: train_net names it in one line
    error = record.exc_info[1] if record.exc_info else None
    return not (isinstance(error, (InputError, FloatingPointError))
                or error is not None and disk_full(error) is not None)


class _FinishedRunEvalHook(hooks.EvalHook):
    """Detectron2's EvalHook, whose final evaluation runs only when training ended normally.

    Detectron2 runs ``after_train`` in a ``finally``: a run stopped in its last iteration, or
    while writing ``model_final.pth``, would still be evaluated and leave a ``results.json``
    of an unfinished model that a comparison counts. ``TrainerBase.train`` leaves
    ``iter == max_iter`` only after the loop completed.
    """

    def after_train(self):
        if self.trainer.iter >= self.trainer.max_iter:
            super().after_train()
        else:
            del self._func  # what EvalHook.after_train also does: drop the closure's refs


def _replaced(hook, log_period: int, build_writers):
    """DefaultTrainer's `hook`, or what RSPTrainer uses in its place."""
    if isinstance(hook, hooks.PeriodicWriter):
        return hooks.PeriodicWriter(build_writers(), period=log_period)
    if isinstance(hook, hooks.EvalHook):
        return _FinishedRunEvalHook(hook._period, hook._func, hook._eval_after_train)
    return hook


class RSPTrainer(RSPDataMixin, DefaultTrainer):
    """DefaultTrainer with:

    * the loaders of :class:`RSPDataMixin`: the dataset mapper named by
      ``INPUT.DATASET_MAPPER_NAME`` (the Cityscapes recipe is "rsp_semantic"), whose errors
      name the failing file;
    * evaluators chosen by each test dataset's ``evaluator_type`` (:func:`build_evaluator`),
      results also saved to ``OUTPUT_DIR/inference/results.json``;
    * atomic checkpoint writes (:class:`AtomicDetectionCheckpointer`);
    * multi-process training on CPU (gloo) as well as GPU;
    * ``SOLVER.AMP.ENABLED`` on ``torch.amp`` (:class:`TorchAMPTrainer`: float16 on CUDA,
      bfloat16 on the CPU);
    * the metric printer every ``RSP_D2.LOG_PERIOD`` iterations;
    * exact resume: the training stream is a function of (SEED, position)
      (:func:`build_resumable_train_loader`), checkpoints hold the RNG states and the data
      seed, ``--resume`` restarts the stream at the checkpoint's iteration, drops the
      ``metrics.json`` records it will write again, removes files of killed writes and writes
      a ``model_final.pth`` whose write was killed; only a checkpoint that fits the model
      exactly is resumed;
    * a NaN/Inf loss named (iteration, loss terms, likely causes) as TrainingDivergedError;
    * the final evaluation only for a run that ended normally, after ``model_final.pth``.
    """

    def __init__(self, cfg):
        if cfg.SEED < 0:  # the data stream needs one seed, the same on every rank
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SEED = comm.shared_random_seed()
            cfg.freeze()
        # DefaultTrainer.__init__ wraps the model, picks the training loop and builds the
        # checkpointer itself, with the module-level create_ddp_model (GPU-only device_ids),
        # AMPTrainer (torch.cuda.amp, CUDA only) and DetectionCheckpointer; no builder method
        # reaches those, so they are swapped for the duration of the call.
        with _swapped(d2_defaults, create_ddp_model=lambda model, **_: wrap_ddp(model),
                      AMPTrainer=TorchAMPTrainer,
                      DetectionCheckpointer=functools.partial(
                          AtomicDetectionCheckpointer, model_config=model_config_of(cfg))):
            super().__init__(cfg)
        self._data_seed = cfg.SEED
        self._outputs = None
        self.model.register_forward_hook(self._keep_outputs)

    def _keep_outputs(self, module, inputs, outputs):
        if module.training:
            self._outputs = outputs  # the loss dict; read only after a NaN/Inf

    def resume_or_load(self, resume=True):
        """Detectron2's resume_or_load; with `resume`, the resume is exact (see the class)
        and refuses a missing or mismatching checkpoint (InputError)."""
        if not resume:
            return super().resume_or_load(resume=False)
        require_checkpoint(self.cfg.OUTPUT_DIR)
        if comm.is_main_process():
            for path in remove_stale_temporaries(self.cfg.OUTPUT_DIR):
                logging.getLogger(__name__).info(f"Removed {path}, left by a killed write")
        self.checkpointer.strict = True
        super().resume_or_load(resume=True)
        self.checkpointer.strict = False
        if comm.is_main_process():
            truncate_metrics(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.iter)
            final = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
            if self.start_iter >= self.max_iter and not os.path.isfile(final):
                self.checkpointer.save("model_final")  # its write was killed
        if uses_resumable_loader(self.cfg):
            self._trainer.reset_data_loader(functools.partial(
                self.build_train_loader, self.cfg, start_iter=self.start_iter,
                seed=self._data_seed))

    def state_dict(self):
        ret = super().state_dict()
        ret["rsp_d2"] = {"rng": get_rng_state(), "data_seed": self._data_seed}
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        saved = state_dict.get("rsp_d2")
        if saved is not None:
            self._data_seed = saved["data_seed"]
            if comm.is_main_process():  # the one rank whose states were saved
                set_rng_state(saved["rng"])

    def train(self):
        # TrainerBase.train logs every exception with its traceback before re-raising; a user
        # error (bad data, a diverging recipe) reaches train_net as one error line instead.
        logger = logging.getLogger("detectron2.engine.train_loop")
        logger.addFilter(_drop_user_error_tracebacks)
        try:
            return super().train()
        finally:
            logger.removeFilter(_drop_user_error_tracebacks)

    def run_step(self):
        self._outputs = None
        try:
            super().run_step()
        except FloatingPointError as e:
            raise TrainingDivergedError(self._divergence(e)) from e

    def _divergence(self, error: FloatingPointError) -> str:
        if isinstance(self._outputs, dict):
            bad = [k for k, v in self._outputs.items()
                   if isinstance(v, torch.Tensor) and not torch.isfinite(v).all()]
            what = f"loss term(s) {', '.join(bad)} became NaN/Inf" if bad else \
                "the total loss became NaN/Inf"
        else:
            what = f"the model's outputs became NaN/Inf ({str(error).splitlines()[0]})"
        return (f"training diverged at iteration {self.iter}: {what}. Likely causes: a learning "
                f"rate too high for the batch (SOLVER.BASE_LR {self.cfg.SOLVER.BASE_LR}: lower "
                "it or lengthen SOLVER.WARMUP_ITERS), a FrozenBN backbone without pretrained "
                "MODEL.WEIGHTS, or bad labels")

    def build_hooks(self):
        period = self.cfg.RSP_D2.LOG_PERIOD
        ret = [_replaced(h, period, self.build_writers) for h in super().build_hooks()]
        # The checkpointer goes last, after the metric writer: a checkpoint of iteration i then
        # implies that metrics.json has iteration i's record, and a resume from it (which drops
        # the later records) leaves no iteration without its record.
        return [h for h in ret if not isinstance(h, hooks.PeriodicCheckpointer)] + \
            [h for h in ret if isinstance(h, hooks.PeriodicCheckpointer)]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        with inference_autocast(cfg, model):
            results = super().test(cfg, model, evaluators)
        if comm.is_main_process() and cfg.OUTPUT_DIR and len(cfg.DATASETS.TEST):
            path = os.path.join(cfg.OUTPUT_DIR, "inference", "results.json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_json_atomic(path, results, indent=2, sort_keys=False)
            logging.getLogger(__name__).info(f"Evaluation results saved to {path}")
        return results
