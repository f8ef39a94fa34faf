"""Mixed-precision training (``SOLVER.AMP.ENABLED``) on ``torch.amp``, on CUDA and on the CPU.

Detectron2's ``AMPTrainer`` uses ``torch.cuda.amp`` (deprecated since torch 2.4: every start
warns) and asserts CUDA. :class:`TorchAMPTrainer` is the same training step on the device-generic
``torch.amp``: float16 with a gradient scaler on CUDA (Detectron2's choice), bfloat16 without
one on the CPU (CPU autocast runs bfloat16, whose float32 exponent range needs no loss scaling).
"""
import contextlib
import logging
import time
from typing import Optional

import torch

from detectron2.engine import AMPTrainer
from detectron2.utils.events import get_event_storage

__all__ = ["TorchAMPTrainer", "amp_precision", "inference_autocast"]


def amp_precision(device_type: str) -> torch.dtype:
    """The autocast dtype of AMP training on `device_type`: float16 on CUDA, else bfloat16."""
    return torch.float16 if device_type == "cuda" else torch.bfloat16


def inference_autocast(cfg, model):
    """``torch.autocast`` to :func:`amp_precision` of the model's device where
    ``TEST.AMP.ENABLED``, else a context that changes nothing."""
    if not cfg.TEST.AMP.ENABLED:
        return contextlib.nullcontext()
    device_type = next(model.parameters()).device.type
    precision = amp_precision(device_type)
    logging.getLogger(__name__).info(f"Evaluating under autocast to {precision} on {device_type}")
    return torch.autocast(device_type, dtype=precision)


class TorchAMPTrainer(AMPTrainer):
    """``AMPTrainer`` on ``torch.amp.autocast`` / ``torch.amp.GradScaler`` for the model's device.

    Same arguments as ``AMPTrainer``; ``precision=None`` picks :func:`amp_precision` of the
    device the model's parameters are on. The gradient scaler is enabled for float16 only.
    """

    def __init__(self, model, data_loader, optimizer, *args, grad_scaler=None,
                 precision: Optional[torch.dtype] = None, **kwargs):
        device_type = next(model.parameters()).device.type
        if precision is None:
            precision = amp_precision(device_type)
        if grad_scaler is None:
            grad_scaler = torch.amp.GradScaler(device_type, enabled=precision == torch.float16)
        super().__init__(model, data_loader, optimizer, *args, grad_scaler=grad_scaler,
                         precision=precision, **kwargs)
        self.device_type = device_type
        logging.getLogger(__name__).info(
            f"AMP training on {device_type} in {precision} (torch.amp, gradient scaler "
            f"{'on' if grad_scaler.is_enabled() else 'off'})")

    def run_step(self):
        """AMPTrainer.run_step with ``torch.autocast(device_type)`` (Detectron2's is CUDA-only)."""
        assert self.model.training, "[TorchAMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()

        self.grad_scaler.scale(losses).backward()
        if self.log_grad_scaler:
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())
        self.after_backward()

        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time,
                                            iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
