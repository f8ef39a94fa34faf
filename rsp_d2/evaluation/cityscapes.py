"""Cityscapes' official pixel-level evaluation, on any number of machines."""
import glob
import io
import itertools
import logging
import os
import tempfile
from collections import OrderedDict
from typing import List

import numpy as np
from PIL import Image

import torch

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

__all__ = ["CityscapesOfficialSemSegEvaluator"]


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
                ``<city>/*_gtFine_labelIds.png``.
        """
        self._metadata = MetadataCatalog.get(dataset_name)
        self._cpu_device = torch.device("cpu")
        self._logger = logging.getLogger(__name__)

    def reset(self):
        self._predictions: List = []  # (file basename, PNG bytes)
        self._lut = _cityscapes_train_id_to_id()

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            basename = os.path.splitext(os.path.basename(input["file_name"]))[0]
            train_ids = output["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy()
            buf = io.BytesIO()
            Image.fromarray(self._lut[train_ids.astype(np.uint8)]).save(buf, format="PNG")
            self._predictions.append((basename + "_pred.png", buf.getvalue()))

    def evaluate(self):
        predictions = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        # Imported here, on rank 0 only, as Detectron2 does: it reads the environment into
        # module globals at import time.
        import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cityscapes_eval

        with tempfile.TemporaryDirectory(prefix="cityscapes_eval_") as pred_dir:
            for name, data in itertools.chain(*predictions):
                with open(os.path.join(pred_dir, name), "wb") as f:
                    f.write(data)
            self._logger.info(f"Evaluating {len(os.listdir(pred_dir))} predictions with "
                              "cityscapesscripts' evalPixelLevelSemanticLabeling ...")
            # The script keeps its settings in a module global.
            cityscapes_eval.args.predictionPath = pred_dir
            cityscapes_eval.args.predictionWalk = None
            cityscapes_eval.args.JSONOutput = False
            cityscapes_eval.args.colorized = False
            gt_dir = PathManager.get_local_path(self._metadata.gt_dir)
            gt_files = sorted(glob.glob(os.path.join(gt_dir, "*", "*_gtFine_labelIds.png")))
            if not gt_files:
                raise FileNotFoundError(f"no *_gtFine_labelIds.png under {gt_dir}/*/ to evaluate")
            pred_files = [cityscapes_eval.getPrediction(cityscapes_eval.args, gt)
                          for gt in gt_files]
            results = cityscapes_eval.evaluateImgLists(pred_files, gt_files, cityscapes_eval.args)

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
