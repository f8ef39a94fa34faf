"""Evaluators: Cityscapes' official evaluation on any number of machines, the semantic
evaluation with a confusion matrix, and the choice of evaluators by ``evaluator_type``."""
from .build import EVALUATOR_TYPES, build_evaluator
from .cityscapes import CityscapesOfficialSemSegEvaluator
from .confusion import CONFUSION_JSON, CONFUSION_PNG, ConfusionMatrixSemSegEvaluator
from .report import format_semantic_results
