"""Evaluators chosen by a dataset's ``evaluator_type`` (MetadataCatalog)."""
import logging
import os
from typing import Callable, Dict, List, Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from .boundary_band import BoundaryBandSemSegEvaluator
from .cityscapes import CityscapesOfficialSemSegEvaluator
from .confusion import ConfusionMatrixSemSegEvaluator
from .panoptic import PairedCOCOPanopticEvaluator

__all__ = ["EVALUATOR_TYPES", "build_evaluator"]


def _semantic(cfg, dataset_name: str, output_dir: str) -> DatasetEvaluator:
    """SemSegEvaluator, or its subclass that also writes the confusion matrix when
    TEST.CONFUSION_MATRIX is set."""
    cls = ConfusionMatrixSemSegEvaluator if cfg.TEST.CONFUSION_MATRIX else SemSegEvaluator
    return cls(dataset_name, distributed=True, output_dir=output_dir)


def _band(cfg, dataset_name: str) -> List[DatasetEvaluator]:
    """The boundary-band evaluator when TEST.BOUNDARY_BAND asks for it."""
    width = cfg.TEST.BOUNDARY_BAND
    return [BoundaryBandSemSegEvaluator(dataset_name, width=width)] if width > 0 else []


def _cityscapes(cfg, dataset_name: str, output_dir: str) -> List[DatasetEvaluator]:
    return [CityscapesOfficialSemSegEvaluator(dataset_name),
            _semantic(cfg, dataset_name, output_dir), *_band(cfg, dataset_name)]


def _coco_panoptic(cfg, dataset_name: str, output_dir: str) -> List[DatasetEvaluator]:
    # Tasks from the config, not from the predictions: an undertrained model that detects
    # nothing must still report (NaN) mask AP rather than drop the "segm" results.
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    return [
        PairedCOCOPanopticEvaluator(dataset_name, output_dir),
        # the semantic branch's stuff classes (+ one "things" class): Table III's mIoU
        SemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir),
        COCOEvaluator(dataset_name, tasks=tasks, distributed=True, output_dir=output_dir),
    ]


def _sem_seg(cfg, dataset_name: str, output_dir: str) -> List[DatasetEvaluator]:
    return [_semantic(cfg, dataset_name, output_dir), *_band(cfg, dataset_name)]


# evaluator_type -> the evaluators of that kind of dataset; what they read per record is listed
# in ground_truth.GROUND_TRUTH_READERS, checked before a run starts
EVALUATOR_TYPES: Dict[str, Callable[..., List[DatasetEvaluator]]] = {
    "cityscapes_sem_seg": _cityscapes,
    "coco_panoptic_seg": _coco_panoptic,
    "sem_seg": _sem_seg,
}


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluators:
    """The evaluators for `dataset_name`, chosen by its metadata's ``evaluator_type``.

    Args:
        output_dir: where evaluators dump predictions; ``OUTPUT_DIR/inference`` when None.
    """
    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type not in EVALUATOR_TYPES:
        raise ValueError(
            f"no evaluator for dataset {dataset_name!r}: its evaluator_type is {evaluator_type!r}, "
            f"expected one of {sorted(EVALUATOR_TYPES)} (set MetadataCatalog.get(name)"
            f".evaluator_type when registering the dataset)")
    evaluators = EVALUATOR_TYPES[evaluator_type](cfg, dataset_name, output_dir)
    logging.getLogger(__name__).info(
        f"Evaluating {dataset_name} ({evaluator_type}) with "
        f"{', '.join(type(e).__name__ for e in evaluators)}")
    return DatasetEvaluators(evaluators)
