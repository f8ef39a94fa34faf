# Table III "RSP-2-D head": Panoptic FPN with the RSP-2 head, kernel 3 dilation 3, on
# Detectron2's Panoptic FPN R50 1x recipe (COCO panoptic loaders, SGD lr 0.02, 90k
# iterations, shorter side 640-800). The LazyConfig twin of configs/coco/panoptic_rsp2.yaml.
from detectron2.model_zoo import get_config

from rsp_d2.evaluation.panoptic import PairedCOCOPanopticEvaluator

from ..common.models.rsp_panoptic_fpn import model

_recipe = get_config("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.py")
dataloader = _recipe.dataloader
optimizer = _recipe.optimizer
lr_multiplier = _recipe.lr_multiplier
train = _recipe.train

model.sem_seg_head.kernel_size = 3
model.sem_seg_head.dilation = 3

# The evaluators of train_net.py: box and mask AP even when an undertrained model predicts no
# mask (Detectron2's COCOEvaluator would then drop "segm"), and PQ that refuses to score a
# prediction without ground truth rather than average over a subset.
_coco, _sem_seg, _panoptic = dataloader.evaluator
_coco.tasks = ("bbox", "segm")
_panoptic._target_ = PairedCOCOPanopticEvaluator
