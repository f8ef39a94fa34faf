"""The Cityscapes schedule of Sec. IV-A: 65k iterations, lr x0.1 at 40k and 55k, after a
1000-iteration linear warm-up from 0.1x (0.001 for lr 0.01).

As Detectron2's coco_schedule.py, it is relative to the length of training: milestones and
warm-up scale with ``train.max_iter`` (the yaml SOLVER.STEPS are absolute iterations).
"""
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[40000, 55000, 65000],  # the last one is the end of training
    ),
    warmup_length=1000 / 65000,
    warmup_method="linear",
    warmup_factor=0.1,
)
