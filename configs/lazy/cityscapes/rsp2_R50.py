# Table I "RSP-2": RSP between Q5-Q4 and Q4-Q3, kernel 7, ResNet-50-FPN, with the Cityscapes
# recipe of Sec. IV-A. The LazyConfig twin of configs/cityscapes/rsp2_R50.yaml.
from detectron2.model_zoo import get_config

from ..common.cityscapes_schedule import lr_multiplier
from ..common.data.cityscapes_semantic import dataloader
from ..common.models.rsp_semantic_fpn import model

optimizer = get_config("common/optim.py").SGD  # momentum 0.9, weight decay 1e-4, none on norms
optimizer.lr = 0.01  # batch 32

train = get_config("common/train.py").train
train.max_iter = 65000
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.checkpointer.period = 5000
train.eval_period = 5000
