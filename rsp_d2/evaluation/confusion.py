"""Detectron2's semantic evaluation plus the confusion matrix it already accumulates."""
import os
from typing import List

import numpy as np

from detectron2.evaluation import SemSegEvaluator

from ..utils.file_io import write_json_atomic

__all__ = ["ConfusionMatrixSemSegEvaluator", "CONFUSION_JSON", "CONFUSION_PNG"]

CONFUSION_JSON = "confusion_matrix.json"
CONFUSION_PNG = "confusion_matrix.png"


class ConfusionMatrixSemSegEvaluator(SemSegEvaluator):
    """``SemSegEvaluator`` (mIoU, fwIoU, mACC, pACC, same results) that also writes the
    per-class confusion matrix into `output_dir`, on the main process, after evaluation:

    - ``confusion_matrix.json``: {"dataset", "class_names" (K), "counts" (K x K, row =
      ground truth, column = prediction, in pixels), "ignored_pixels" (ground truth equal to
      the ignore label, which no metric counts), "rows", "columns"};
    - ``confusion_matrix.png``: the counts row-normalized (each ground-truth class's pixels
      split over the predicted classes; the diagonal is the per-class accuracy), with labels.

    Both are written to a temporary sibling and renamed into place, so a reader never sees a
    partial file. The counts are SemSegEvaluator's own ``_conf_matrix`` (indexed [pred, gt],
    with an extra last row/column for the ignore label), gathered over all processes by its
    ``evaluate``; nothing is recomputed.

    ``rsp_d2.engine`` uses it in place of ``SemSegEvaluator`` for ``sem_seg`` and
    ``cityscapes_sem_seg`` datasets when ``TEST.CONFUSION_MATRIX`` is True:
    ``train_net.py --eval-only ... TEST.CONFUSION_MATRIX True`` leaves both files in
    ``OUTPUT_DIR/inference``.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None, **kwargs):
        if not output_dir:
            raise ValueError("ConfusionMatrixSemSegEvaluator needs an output_dir to write "
                             f"{CONFUSION_JSON} and {CONFUSION_PNG} into")
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir, **kwargs)

    def confusion_matrix(self) -> np.ndarray:
        """(K, K) int64 pixel counts, row = ground-truth class, column = predicted class,
        of what has been processed (after ``evaluate``: of all processes)."""
        k = self._num_classes
        return self._conf_matrix[:k, :k].T.copy()

    @property
    def class_names(self) -> List[str]:
        return list(self._class_names)

    def evaluate(self):
        results = super().evaluate()  # gathers _conf_matrix; None off the main process
        if results is None:
            return results
        counts = self.confusion_matrix()
        os.makedirs(self._output_dir, exist_ok=True)
        write_json_atomic(os.path.join(self._output_dir, CONFUSION_JSON), {
            "dataset": self._dataset_name,
            "class_names": self.class_names,
            "counts": counts.tolist(),
            "ignored_pixels": int(self._conf_matrix[:, -1].sum()),
            "rows": "ground truth",
            "columns": "prediction",
        })
        # Imported here: evaluation must not need matplotlib unless it writes the picture.
        from ..visualization.confusion import draw_confusion_matrix
        from ..visualization.figures import save_figure

        save_figure(draw_confusion_matrix(counts, self.class_names,
                                          f"{self._dataset_name}: confusion matrix "
                                          "(% of each ground-truth class)"),
                    os.path.join(self._output_dir, CONFUSION_PNG))
        self._logger.info(f"Wrote {CONFUSION_JSON} and {CONFUSION_PNG} to {self._output_dir}")
        return results
