"""The semantic evaluator that also writes the confusion matrix."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from support.tools import assert_png


# ------------------------------------------------------------------------ confusion matrix

def test_confusion_matrix_evaluator(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from rsp_d2.evaluation import CONFUSION_JSON, CONFUSION_PNG, ConfusionMatrixSemSegEvaluator
    from rsp_d2.visualization import confusion_figure_size

    classes = ["road", "car", "person"]
    gts = [np.array([[0, 0, 1, 1], [2, 2, 255, 0]], dtype=np.uint8),
           np.array([[1, 1, 1, 2], [0, 255, 255, 2]], dtype=np.uint8)]
    preds = [np.array([[0, 1, 1, 1], [2, 0, 0, 0]]), np.array([[1, 1, 0, 2], [0, 2, 1, 1]])]
    records = []
    for i, gt in enumerate(gts):
        path = tmp_path / f"gt_{i}.png"
        Image.fromarray(gt).save(path)
        records.append({"file_name": f"image_{i}.png", "sem_seg_file_name": str(path)})
    name = f"confusion_test_{os.getpid()}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=classes, ignore_label=255)
    try:
        out = tmp_path / "inference"
        evaluator = ConfusionMatrixSemSegEvaluator(name, distributed=False, output_dir=str(out))
        evaluator.reset()
        for record, pred in zip(records, preds):
            logits = torch.nn.functional.one_hot(torch.as_tensor(pred), 3).permute(2, 0, 1).float()
            evaluator.process([record], [{"sem_seg": logits}])
        results = evaluator.evaluate()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    # Rows: ground truth, columns: prediction; the 3 ignored pixels are not counted.
    expected = np.zeros((3, 3), dtype=int)
    for gt, pred in zip(gts, preds):
        for g, p in zip(gt.ravel(), pred.ravel()):
            if g != 255:
                expected[g, p] += 1
    assert expected.tolist() == [[3, 1, 0], [1, 4, 0], [1, 1, 2]]
    data = json.loads((out / CONFUSION_JSON).read_text())
    assert data["class_names"] == classes
    assert data["counts"] == expected.tolist()
    assert data["ignored_pixels"] == 3
    assert (data["rows"], data["columns"]) == ("ground truth", "prediction")
    # The matrix is SemSegEvaluator's own: its mIoU follows from the same counts.
    tp = np.diag(expected)
    iou = tp / (expected.sum(0) + expected.sum(1) - tp)
    assert results["sem_seg"]["mIoU"] == pytest.approx(100 * iou.mean())
    assert confusion_figure_size(3) == (640, 640)
    assert_png(out / CONFUSION_PNG, (640, 640))
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary file left


def test_confusion_matrix_evaluator_needs_an_output_dir():
    from rsp_d2.evaluation import ConfusionMatrixSemSegEvaluator

    with pytest.raises(ValueError, match="needs an output_dir"):
        ConfusionMatrixSemSegEvaluator("cityscapes_fine_sem_seg_val", output_dir=None)
