# The CPU demo as a LazyConfig (configs/synthetic/rsp4_R18.yaml): RSP-4 on a ResNet-18-FPN
# trained from scratch on the synthetic Cityscapes (256 x 512 images, a quarter of Cityscapes'
# side), 600 iterations. Sec. IV-A's recipe scaled by 1/4 in image side, except the model size
# and the schedule. Run with DETECTRON2_DATASETS pointing at the synthetic data:
#   python tools/make_synthetic_datasets.py --root datasets/synthetic
#   DETECTRON2_DATASETS=datasets/synthetic python .../detectron2/tools/lazyconfig_train_net.py \
#       --config-file configs/lazy/synthetic/rsp4_R18.py
from ..cityscapes.rsp4_R50 import dataloader, lr_multiplier, model, optimizer, train

_bottom_up = model.backbone.bottom_up
_bottom_up.stages.depth = 18
del _bottom_up.stages.stride_in_1x1  # a bottleneck argument: ResNet-18 has basic blocks
# Trained from scratch, the statistics must be learned: FrozenBN (the paper's choice for an
# ImageNet-pretrained backbone) would freeze random-init statistics (mean 0, var 1). GN
# rather than BN: batch-size independent.
_bottom_up.stem.norm = "GN"
_bottom_up.stages.norm = "GN"
model.backbone.out_channels = 64
model.sem_seg_head.conv_dims = 64

# 0.5x to 2.0x of the 256-pixel shorter side in 8-pixel steps (32 at Cityscapes' size).
_resize, _crop = dataloader.train.mapper.augmentations[:2]
_resize.short_edge_length = list(range(128, 513, 8))
_resize.max_size = 1024
_crop.crop_size = (128, 256)
dataloader.test.mapper.augmentations[0].short_edge_length = 256
dataloader.test.mapper.augmentations[0].max_size = 512
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 1
dataloader.test.num_workers = 1

optimizer.lr = 0.02
train.max_iter = 600
lr_multiplier.scheduler.milestones = [450, 550, 600]
lr_multiplier.warmup_length = 20 / 600
train.init_checkpoint = ""  # from scratch: no download
train.device = "cpu"
train.seed = 0
train.checkpointer.period = 200
train.eval_period = 0  # evaluate once, after the last iteration
train.log_period = 10
train.output_dir = "output/lazy_demo_rsp4_R18"
