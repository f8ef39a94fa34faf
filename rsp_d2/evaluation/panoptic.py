"""COCO panoptic evaluation that scores every prediction or refuses."""
import json
from typing import Dict, Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.utils.file_io import PathManager

from ..data.mapper import DatasetRecordError

__all__ = ["PairedCOCOPanopticEvaluator", "panoptic_ground_truth"]


def panoptic_ground_truth(panoptic_json: str) -> Dict[int, str]:
    """{image_id: PNG file name in ``panoptic_root``} of a COCO panoptic annotation file: the
    ground truth panopticapi's ``pq_compute`` pairs each prediction with, by image id."""
    with PathManager.open(panoptic_json) as f:
        annotations = json.load(f)["annotations"]
    return {int(a["image_id"]): a["file_name"] for a in annotations}


class PairedCOCOPanopticEvaluator(COCOPanopticEvaluator):
    """Detectron2's ``COCOPanopticEvaluator`` (PQ, SQ, RQ; same results), refusing an image
    without ground truth: ``pq_compute`` iterates over the annotations of ``panoptic_json``
    and silently leaves out a prediction for any other image, so PQ would be a mean over a
    subset. Raises :class:`DatasetRecordError` naming the image instead
    (``rsp_d2.engine.dataset_checks`` finds such images before a run starts).
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        super().__init__(dataset_name, output_dir)
        self._dataset_name = dataset_name
        self._ground_truth: Optional[Dict[int, str]] = None  # read on the first process()

    def process(self, inputs, outputs):
        if self._ground_truth is None:
            self._ground_truth = panoptic_ground_truth(
                MetadataCatalog.get(self._dataset_name).panoptic_json)
        for input in inputs:
            if int(input["image_id"]) not in self._ground_truth:
                raise DatasetRecordError(
                    f"COCO panoptic evaluation of {self._dataset_name!r}: image "
                    f"{input['file_name']} (image_id {input['image_id']}) has no annotation in "
                    f"{self._metadata.panoptic_json}; refusing to score a subset")
        super().process(inputs, outputs)
