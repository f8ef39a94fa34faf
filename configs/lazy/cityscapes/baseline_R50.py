# Table I "Baseline": pixel-to-pixel sums on Q2-Q5 (configs/cityscapes/baseline_R50.yaml).
from .rsp2_R50 import dataloader, lr_multiplier, model, optimizer, train

model.sem_seg_head.fusion = ["sum", "sum", "sum"]
