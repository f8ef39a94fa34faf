"""Evaluators added to Detectron2's: the semantic evaluation with a confusion matrix."""
from .confusion import CONFUSION_JSON, CONFUSION_PNG, ConfusionMatrixSemSegEvaluator

__all__ = ["ConfusionMatrixSemSegEvaluator", "CONFUSION_JSON", "CONFUSION_PNG"]
