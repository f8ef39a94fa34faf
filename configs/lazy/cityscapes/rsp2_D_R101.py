# Table I "RSP-2-D": ResNet-101-FPN, kernel 3 with dilation 3 (configs/cityscapes/rsp2_D_R101.yaml).
from .rsp2_R50 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
model.sem_seg_head.kernel_size = 3
model.sem_seg_head.dilation = 3
