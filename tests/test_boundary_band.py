"""The boundary-band evaluation (TEST.BOUNDARY_BAND; rsp_d2/evaluation/boundary_band.py): the
band is where the ground truth changes label within the width, and its metrics count only the
band's pixels."""
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from rsp_d2.evaluation import BoundaryBandSemSegEvaluator, boundary_band


def test_band_is_where_the_label_changes_within_the_width():
    labels = np.zeros((6, 10), np.int64)
    labels[:, 5:] = 1  # a vertical boundary between columns 4 and 5
    band = boundary_band(labels, 2)
    assert band[:, 3:7].all() and not band[:, :3].any() and not band[:, 7:].any()
    assert not boundary_band(np.zeros((4, 4), np.int64), 1).any()  # no boundary at the border
    with pytest.raises(ValueError, match="expected >= 1"):
        boundary_band(labels, 0)


@pytest.fixture
def toy_dataset(tmp_path):
    """One 8 x 16 image: class 0 left, class 1 right, ignore (255) in one corner."""
    gt = np.zeros((8, 16), np.uint8)
    gt[:, 8:] = 1
    gt[0, 0] = 255
    Image.fromarray(gt).save(tmp_path / "gt.png")
    name = f"band_toy_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: [{"file_name": "img.png",
                                            "sem_seg_file_name": str(tmp_path / "gt.png")}])
    MetadataCatalog.get(name).set(stuff_classes=["left", "right"], ignore_label=255,
                                  evaluator_type="sem_seg")
    yield name, gt
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _scores(name, labels):
    logits = torch.nn.functional.one_hot(torch.as_tensor(labels), 2).permute(2, 0, 1).float()
    evaluator = BoundaryBandSemSegEvaluator(name, width=1, distributed=False)
    evaluator.reset()
    evaluator.process([{"file_name": "img.png"}], [{"sem_seg": logits}])
    return evaluator.evaluate()["sem_seg_band"]


def test_band_metrics_count_only_the_band(toy_dataset):
    name, gt = toy_dataset
    wrong_inside = np.where(gt == 1, 1, 0).astype(np.int64)
    wrong_inside[4, 2] = 1  # far from the boundary: outside the band
    scores = _scores(name, wrong_inside)
    assert scores["mIoU"] == pytest.approx(100.0)  # the band is all right
    # the 16 pixels beside the class boundary, and the 3 beside the ignored corner pixel
    assert scores["width"] == 1 and scores["band_fraction"] == pytest.approx(19 / 127)

    wrong_at_boundary = np.where(gt == 1, 1, 0).astype(np.int64)
    wrong_at_boundary[:, 7] = 1  # the band's left column mislabelled: 8 of its 11 left pixels
    scores = _scores(name, wrong_at_boundary)
    assert scores["IoU-left"] == pytest.approx(100 * 3 / 11)
    assert scores["IoU-right"] == pytest.approx(50.0)  # 8 right pixels, 8 wrongly right
