"""Text reports of evaluation results."""
import math
from typing import Dict, Sequence

__all__ = ["format_semantic_results"]


def _fmt(value) -> str:
    return "    -" if value is None or math.isnan(value) else f"{value:5.1f}"


def format_semantic_results(results: Dict, class_names: Sequence[str]) -> str:
    """A text table of per-class IoU (%) from both Cityscapes evaluators.

    Args:
        results: ``RSPTrainer.test`` output, with "cityscapes_sem_seg" (official
            cityscapesscripts) and "sem_seg" (Detectron2's SemSegEvaluator).
        class_names: the classes, in train-id order.

    "-" marks a class left out of that evaluator's mean: the official script leaves out a
    class with neither ground truth nor predictions (predicted but absent scores 0),
    SemSegEvaluator every class without ground truth.
    """
    official, d2 = results["cityscapes_sem_seg"], results["sem_seg"]
    width = max(len(n) for n in class_names) + 2
    lines = [f"{'class':<{width}} official IoU   SemSegEvaluator IoU",
             "-" * (width + 35)]
    for name in class_names:
        lines.append(f"{name:<{width}} {_fmt(official.get(f'IoU-{name}'))}          "
                     f"{_fmt(d2.get(f'IoU-{name}'))}")
    lines += ["-" * (width + 35),
              f"{'mean (mIoU)':<{width}} {_fmt(official['IoU'])}          {_fmt(d2['mIoU'])}",
              f"official: iIoU {official['iIoU']:.1f}, category IoU {official['IoU_sup']:.1f}, "
              f"category iIoU {official['iIoU_sup']:.1f}; SemSegEvaluator: fwIoU "
              f"{d2['fwIoU']:.1f}, mACC {d2['mACC']:.1f}, pACC {d2['pACC']:.1f}",
              "(-: not in that mean. Official: no ground truth and never predicted; "
              "SemSegEvaluator: no ground truth.)"]
    return "\n".join(lines)
