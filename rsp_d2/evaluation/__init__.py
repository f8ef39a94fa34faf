"""Evaluators: Cityscapes' official evaluation on any number of machines, the semantic
evaluation with a confusion matrix and over the pixels near class boundaries, COCO panoptic evaluation without silent subsets, the choice
of evaluators by ``evaluator_type``, and the ground truth each of them reads."""
from .boundary_band import BoundaryBandSemSegEvaluator, boundary_band
from .build import EVALUATOR_TYPES, build_evaluator
from .cityscapes import CityscapesOfficialSemSegEvaluator
from .confusion import CONFUSION_JSON, CONFUSION_PNG, ConfusionMatrixSemSegEvaluator
from .ground_truth import GROUND_TRUTH_READERS, GroundTruthFile, ground_truth_files
from .panoptic import PairedCOCOPanopticEvaluator
from .report import format_semantic_results
