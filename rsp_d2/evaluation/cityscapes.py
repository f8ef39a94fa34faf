"""Cityscapes' official pixel-level evaluation, on any number of machines."""
import glob
import io
import itertools
import logging
import os
from collections import OrderedDict
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

import torch

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from ..data.headers import header_size
from ..data.mapper import DatasetRecordError

__all__ = ["CityscapesOfficialSemSegEvaluator", "official_ground_truth", "unmatched_ground_truth"]

_IMAGE_SUFFIX = "leftImg8bit.png"


def official_ground_truth(image_file: str, gt_dir: str) -> Tuple[str, str]:
    """(labelIds, instanceIds) files the official evaluation reads for the image
    ``<city>/<stem>leftImg8bit.png``: ``gt_dir/<city>/<stem>gtFine_labelIds.png`` (IoU) and
    its ``instanceIds`` sibling (iIoU), named as Detectron2's loader and cityscapesscripts do.
    """
    name = os.path.basename(image_file)
    stem = name[: -len(_IMAGE_SUFFIX)] if name.endswith(_IMAGE_SUFFIX) else \
        os.path.splitext(name)[0] + "_"
    label_ids = os.path.join(gt_dir, os.path.basename(os.path.dirname(image_file)),
                             stem + "gtFine_labelIds.png")
    # cityscapesscripts' evaluatePair derives the instance file this way
    return label_ids, label_ids.replace("labelIds", "instanceIds")


def unmatched_ground_truth(gt_dir: str, label_ids_files: Sequence[str]) -> List[str]:
    """The ``gt_dir/*/*_gtFine_labelIds.png`` files not in `label_ids_files`: ground truth of
    images that are not in the dataset. The official benchmark scores every image of the split,
    and a result on part of it is not comparable."""
    expected = {os.path.normpath(f) for f in label_ids_files}
    return [f for f in sorted(glob.glob(os.path.join(gt_dir, "*", "*_gtFine_labelIds.png")))
            if os.path.normpath(f) not in expected]


def _cityscapes_train_id_to_id() -> np.ndarray:
    """(256,) uint8 lookup: trainId -> Cityscapes label id, 255 for trainIds not evaluated."""
    from cityscapesscripts.helpers.labels import trainId2label

    lut = np.full(256, 255, dtype=np.uint8)
    for train_id, label in trainId2label.items():
        if 0 <= train_id < 255 and not label.ignoreInEval:
            lut[train_id] = label.id
    return lut


class CityscapesOfficialSemSegEvaluator(DatasetEvaluator):
    """Cityscapes' official pixel-level evaluation (cityscapesscripts), on any number of machines.

    Detectron2's ``CityscapesSemSegEvaluator`` has every rank write its predictions into one
    temporary directory (so it asserts a single machine) and reports only the averages. Here
    each rank keeps its predictions as label-id PNG bytes, rank 0 gathers them, writes them
    and runs the official script, and the result also holds the per-class IoU.

    Results, under the key "cityscapes_sem_seg" (the key "sem_seg" belongs to
    ``SemSegEvaluator``): "IoU", "iIoU", "IoU_sup", "iIoU_sup" and "IoU-<class>", in percent.

    It uses nothing of Detectron2's Cityscapes evaluators: their code in upstream Detectron2
    ``main`` imports ``deeplearning.projects.cityscapesApi``, a module that is not public
    (upstream issue #5436), while this one imports ``cityscapesscripts`` itself.
    """

    def __init__(self, dataset_name: str):
        """
        Args:
            dataset_name: a registered dataset whose metadata has ``gt_dir``, the folder of
                ``<city>/*_gtFine_labelIds.png`` and ``*_gtFine_instanceIds.png``.
        """
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._cpu_device = torch.device("cpu")
        self._logger = logging.getLogger(__name__)

    def reset(self):
        self._predictions: List = []  # (image file, PNG bytes of the label ids)
        self._lut = _cityscapes_train_id_to_id()

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            train_ids = output["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy()
            buf = io.BytesIO()
            Image.fromarray(self._lut[train_ids.astype(np.uint8)]).save(buf, format="PNG")
            self._predictions.append((input["file_name"], buf.getvalue()))

    def evaluate(self):
        predictions = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        # Imported here, on rank 0 only, as Detectron2 does: it reads the environment into
        # module globals at import time.
        import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cityscapes_eval

        gt_dir = PathManager.get_local_path(self._metadata.gt_dir)
        pairs = self._pair(list(itertools.chain(*predictions)), gt_dir)
        self._logger.info(f"Evaluating {len(pairs)} predictions with cityscapesscripts' "
                          "evalPixelLevelSemanticLabeling ...")
        # The script keeps its settings in a module global. It opens each prediction with
        # Image.open, which reads a file object as well as a path.
        cityscapes_eval.args.JSONOutput = False
        cityscapes_eval.args.colorized = False
        cityscapes_eval.args.evalInstLevelScore = True  # iIoU, from the instanceIds files
        results = cityscapes_eval.evaluateImgLists([io.BytesIO(png) for png, _ in pairs],
                                                   [gt for _, gt in pairs],
                                                   cityscapes_eval.args)

        ret = {
            "IoU": 100.0 * results["averageScoreClasses"],
            "iIoU": 100.0 * results["averageScoreInstClasses"],
            "IoU_sup": 100.0 * results["averageScoreCategories"],
            "iIoU_sup": 100.0 * results["averageScoreInstCategories"],
        }
        from cityscapesscripts.helpers.labels import name2label

        for name, score in results["classScores"].items():
            if not name2label[name].ignoreInEval:  # the others are always NaN
                ret[f"IoU-{name}"] = 100.0 * score
        return OrderedDict({"cityscapes_sem_seg": ret})

    def _pair(self, predictions, gt_dir: str) -> List[Tuple[bytes, str]]:
        """(PNG bytes, labelIds file) of every prediction, once every file the official script
        reads for it exists with the prediction's size and every ground truth of `gt_dir` has
        a prediction. Otherwise cityscapesscripts would score a subset, or exit the process."""
        where = f"the official Cityscapes evaluation of {self._dataset_name!r}"
        if not predictions:
            raise DatasetRecordError(f"{where}: no predictions to score")
        pairs, missing, mismatched = [], [], []
        for image_file, png in predictions:
            files = official_ground_truth(image_file, gt_dir)
            pairs.append((png, files[0]))
            absent = [f for f in files if not os.path.isfile(f)]
            if absent:
                missing.append(absent[0])
                continue
            expected = Image.open(io.BytesIO(png)).size
            mismatched += [f"{f} is {size[0]}x{size[1]}, the prediction for {image_file} "
                           f"{expected[0]}x{expected[1]}"
                           for f in files if (size := header_size(f)) != expected]
        if missing:
            raise DatasetRecordError(
                f"{where}: {len(missing)} of the {len(predictions)} predicted images have no "
                f"ground truth (e.g. {missing[0]} does not exist); refusing to score a subset")
        if mismatched:
            raise DatasetRecordError(f"{where}: {len(mismatched)} ground-truth files do not have "
                                     f"the size of their prediction (e.g. {mismatched[0]})")
        unmatched = unmatched_ground_truth(gt_dir, [gt for _, gt in pairs])
        if unmatched:
            raise DatasetRecordError(
                f"{where}: {len(unmatched)} ground-truth files under {gt_dir} have no prediction "
                f"(e.g. {unmatched[0]}): their images are not in the dataset; refusing to score "
                "a subset")
        return pairs
