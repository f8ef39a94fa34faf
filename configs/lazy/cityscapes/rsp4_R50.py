# Table I "RSP-4": P2-P7, RSP between every pair but Q3-Q2, kernel 7
# (configs/cityscapes/rsp4_R50.yaml).
from ..common.models.rsp4_p2p7 import to_rsp4
from .rsp2_R50 import dataloader, lr_multiplier, model, optimizer, train

to_rsp4(model)
