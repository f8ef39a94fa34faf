"""Dataset mappers: the Cityscapes training recipe of Sec. IV-A, and errors that name the file.

Choose the mapper with ``INPUT.DATASET_MAPPER_NAME`` (see :func:`build_mapper`):
"rsp_semantic" for semantic segmentation, "default" (Detectron2's ``DatasetMapper``) for the
COCO panoptic task.
"""
import copy
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform

from ..utils.errors import InputError
from .image_io import read_image

__all__ = [
    "DatasetRecordError",
    "PadToSize",
    "RSPSemanticDatasetMapper",
    "ReportFileErrors",
    "build_mapper",
    "build_semantic_augmentations",
    "check_label_values",
    "read_dataset_image",
]


class DatasetRecordError(InputError, RuntimeError):
    """A dataset record (image or annotation file) could not be loaded; the message names it.
    A user error like any (:class:`InputError`), and a RuntimeError for callers that catch
    what a loader raises."""


def read_dataset_image(path: str, image_format: Optional[str]) -> np.ndarray:
    """A dataset file as an array, its failures as :class:`DatasetRecordError` naming the file
    (Pillow reports a truncated or corrupt file without its name, "image file is truncated",
    which is useless among thousands of dataset files).

    Args:
        image_format: an image's channel order ("BGR", "RGB"): read by the package's one image
            reader (:func:`rsp_d2.data.image_io.read_image`: 16-bit scaled, not clipped); None
            for a label map, whose values are read as they are.
    """
    try:
        if image_format is None:
            return utils.read_image(path)
        return read_image(path, format=image_format)
    except Exception as e:
        raise DatasetRecordError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e


def check_label_values(sem_seg: Union[np.ndarray, torch.Tensor], label_file: str, num_classes: int,
                       ignore_value: int) -> None:
    """Raise DatasetRecordError unless every value of `sem_seg` (H, W) is in
    [0, num_classes) or is `ignore_value`.

    A min/max per label map: the offending values are only listed once one is found. Without
    this, the loss fails with ``IndexError: Target 40 is out of bounds``, naming no file.
    """
    labels = sem_seg.numpy() if isinstance(sem_seg, torch.Tensor) else np.asarray(sem_seg)
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high < num_classes:
        return
    if low >= 0 and high == ignore_value and \
            int(np.where(labels == ignore_value, 0, labels).max()) < num_classes:
        return
    values = np.unique(labels).tolist()
    bad = [v for v in values if not (0 <= v < num_classes or v == ignore_value)]
    raise DatasetRecordError(
        f"label map {label_file} has values {bad[:10]} outside [0, {num_classes}) "
        f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES {num_classes}) that are not the ignore label "
        f"(MODEL.SEM_SEG_HEAD.IGNORE_VALUE {ignore_value}): fix the labels (Cityscapes: train "
        "ids made by csCreateTrainIdLabelImgs) or the two keys")


class ReportFileErrors:
    """Wraps a dataset mapper so that any failure names the files of the record being mapped,
    and, given `num_classes`, checks the values of its ``sem_seg`` labels
    (:func:`check_label_values`).

    Records are never skipped: Detectron2's ``MapDataset`` only retries other records when a
    mapper returns None, and this raises instead.
    """

    def __init__(self, mapper: Callable[[Dict], Dict], num_classes: Optional[int] = None,
                 ignore_value: int = 255):
        self.mapper = mapper
        self.num_classes, self.ignore_value = num_classes, ignore_value

    def __call__(self, dataset_dict: Dict) -> Dict:
        try:
            mapped = self.mapper(dataset_dict)
        except DatasetRecordError:
            raise
        except Exception as e:
            files = {k: v for k, v in dataset_dict.items() if k.endswith("file_name")}
            raise DatasetRecordError(
                f"cannot load dataset record {files}: {type(e).__name__}: {e}") from e
        if self.num_classes is not None and mapped.get("sem_seg") is not None:
            check_label_values(mapped["sem_seg"], dataset_dict.get("sem_seg_file_name"),
                               self.num_classes, self.ignore_value)
        return mapped

    def __repr__(self):
        return f"ReportFileErrors({self.mapper!r})"


class PadToSize(T.Augmentation):
    """Pad the bottom and right up to ``size`` (h, w), labels with ``seg_pad_value``.

    Keeps every training batch at the fixed crop size even where scale jitter made an image
    smaller than the crop; padded pixels carry the ignore label, so they add no loss.
    """

    def __init__(self, size: Tuple[int, int], pad_value: float = 128.0, seg_pad_value: int = 255):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph == 0 and pw == 0:
            return T.NoOpTransform()
        return T.PadTransform(0, 0, pw, ph, orig_w=w, orig_h=h, pad_value=self.pad_value,
                              seg_pad_value=self.seg_pad_value)


def build_semantic_augmentations(cfg, is_train: bool) -> List[Union[T.Augmentation, T.Transform]]:
    """The augmentations of Sec. IV-A, in order: scale jitter, crop (with crop bootstrapping),
    SSD colour distortion, horizontal flip, padding to the crop size. Test: resize only."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                 cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    crop = cfg.INPUT.CROP
    if crop.ENABLED:
        augs.append(T.RandomCrop_CategoryAreaConstraint(
            crop.TYPE, crop.SIZE, crop.SINGLE_CATEGORY_MAX_AREA, ignore))
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    if cfg.INPUT.RANDOM_FLIP == "horizontal":
        augs.append(T.RandomFlip(horizontal=True, vertical=False))
    elif cfg.INPUT.RANDOM_FLIP == "vertical":
        augs.append(T.RandomFlip(horizontal=False, vertical=True))
    elif cfg.INPUT.RANDOM_FLIP != "none":
        raise ValueError(f"INPUT.RANDOM_FLIP={cfg.INPUT.RANDOM_FLIP!r}: expected "
                         "'horizontal', 'vertical' or 'none'")
    # Only an absolute crop size is known before seeing the image.
    if crop.ENABLED and crop.TYPE == "absolute":
        augs.append(PadToSize(tuple(crop.SIZE), seg_pad_value=ignore))
    return augs


class RSPSemanticDatasetMapper:
    """Maps a semantic-segmentation record (``file_name``, ``sem_seg_file_name``) to model input.

    Returns the record plus ``image``: (3, H, W) uint8 tensor in ``image_format`` channel order,
    and ``sem_seg``: (H, W) int64 tensor of train ids (``ignore_label`` where unlabelled or
    padded). With the training recipe, H x W is the crop size.
    """

    @configurable
    def __init__(self, is_train: bool = True, *,
                 augmentations: Sequence[Union[T.Augmentation, T.Transform]],
                 image_format: str, ignore_label: int = 255,
                 num_classes: Optional[int] = None):
        """
        Args:
            is_train: training needs ``sem_seg_file_name``; at test time it is optional.
            augmentations: applied in order to the image and the labels together.
            image_format: as in ``detection_utils.read_image`` ("BGR", "RGB", ...).
            ignore_label: the label of pixels without ground truth.
            num_classes: given, every label map is checked to hold only values in
                [0, num_classes) or `ignore_label`, before a crop could hide one.
        """
        self.num_classes = num_classes
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.ignore_label = ignore_label
        logging.getLogger(__name__).info(
            f"[RSPSemanticDatasetMapper] augmentations ({'train' if is_train else 'test'}): "
            f"{augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_semantic_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict = copy.deepcopy(dataset_dict)  # the caller's record must stay untouched
        image = read_dataset_image(dataset_dict["file_name"], self.image_format)
        utils.check_image_size(dataset_dict, image)
        sem_seg = None
        if "sem_seg_file_name" in dataset_dict:
            label_file = dataset_dict["sem_seg_file_name"]
            # Raw pixel values (format None): converting to "L" would turn palette indices into
            # luminance and clip 16-bit ids.
            sem_seg = read_dataset_image(label_file, None)
            if sem_seg.shape != image.shape[:2]:
                raise DatasetRecordError(
                    f"label map {label_file} has shape {sem_seg.shape}, expected a single "
                    f"channel of the size of its image {image.shape[:2]}")
            if self.num_classes is not None:
                check_label_values(sem_seg, label_file, self.num_classes, self.ignore_label)
        elif self.is_train:
            raise DatasetRecordError(
                f"{dataset_dict['file_name']}: training record has no 'sem_seg_file_name'")

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if aug_input.sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype("long"))
        return dataset_dict


_MAPPERS = {"default": DatasetMapper, "rsp_semantic": RSPSemanticDatasetMapper}


def build_mapper(cfg, is_train: bool) -> ReportFileErrors:
    """The mapper named by ``INPUT.DATASET_MAPPER_NAME``, reporting file errors.

    At test time both only resize (INPUT.MIN_SIZE_TEST); the semantic one names exactly
    which file of a record is unreadable.
    """
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in _MAPPERS:
        raise ValueError(f"INPUT.DATASET_MAPPER_NAME={name!r}: expected one of "
                         f"{sorted(_MAPPERS)}")
    mapper = _MAPPERS[name](cfg, is_train=is_train)
    if name == "rsp_semantic":  # checks its labels itself, before cropping
        return ReportFileErrors(mapper)
    head = cfg.MODEL.SEM_SEG_HEAD
    return ReportFileErrors(mapper, head.NUM_CLASSES, head.IGNORE_VALUE)
