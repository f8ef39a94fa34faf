"""Cityscapes semantic segmentation loaders with the data recipe of Sec. IV-A, the LazyConfig
form of configs/cityscapes/Base-RSP-Cityscapes.yaml's INPUT / DATASETS / DATALOADER.

Train: shorter side 512-2048 in 32-pixel steps, 512 x 1024 crops with crop bootstrapping (a
crop is redrawn while one class covers more than 75 % of it), SSD colour distortion, horizontal
flip, padding to the crop size with the ignore label. Test: shorter side 1024. Evaluated with
the official cityscapesscripts evaluation and Detectron2's SemSegEvaluator, as train_net.py
does. The datasets are Detectron2's builtin ``cityscapes_fine_sem_seg_*`` under
$DETECTRON2_DATASETS (train ids made by cityscapesscripts' csCreateTrainIdLabelImgs).
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import SemSegEvaluator
from detectron2.projects.point_rend import ColorAugSSDTransform

from rsp_d2.data.mapper import PadToSize, RSPSemanticDatasetMapper
from rsp_d2.evaluation.cityscapes import CityscapesOfficialSemSegEvaluator

dataloader = OmegaConf.create()

# Detectron2's DatasetMapper reads semantic labels too, but cannot redraw crops, pad them to
# a fixed size with the ignore label, or name a label map that holds values outside the
# classes; rsp_d2's mapper does, with the augmentations given here.
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_sem_seg_train"),
    mapper=L(RSPSemanticDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(
                short_edge_length=list(range(512, 2049, 32)),  # 0.5x-2.0x of 1024 x 2048
                max_size=4096,
                sample_style="choice",
            ),
            # "crop bootstrapping"; the paper gives no threshold
            L(T.RandomCrop_CategoryAreaConstraint)(
                crop_type="absolute",
                crop_size=(512, 1024),
                single_category_max_area=0.75,
                ignored_category="${...ignore_label}",
            ),
            L(ColorAugSSDTransform)(img_format="${...image_format}"),  # "color augmentation [29]"
            L(T.RandomFlip)(horizontal=True, vertical=False),
            # scale jitter can leave an image smaller than the crop: batches keep the crop size
            L(PadToSize)(size="${..1.crop_size}", seg_pad_value="${...ignore_label}"),
        ],
        image_format="BGR",
        ignore_label=255,
        num_classes=19,  # every label map is checked against it
    ),
    total_batch_size=32,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="cityscapes_fine_sem_seg_val", filter_empty=False),
    mapper=L(RSPSemanticDatasetMapper)(
        is_train=False,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=1024, max_size=2048, sample_style="choice")
        ],
        image_format="${...train.mapper.image_format}",
        ignore_label="${...train.mapper.ignore_label}",
        num_classes="${...train.mapper.num_classes}",
    ),
    num_workers=4,
)

# Detectron2's CityscapesSemSegEvaluator imports a module upstream Detectron2 does not publish
# (issue #5436); rsp_d2's calls cityscapesscripts itself and also reports per-class IoU.
dataloader.evaluator = [
    L(CityscapesOfficialSemSegEvaluator)(dataset_name="${...test.dataset.names}"),
    L(SemSegEvaluator)(dataset_name="${...test.dataset.names}"),
]
