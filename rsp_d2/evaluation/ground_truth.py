"""The ground truth that the evaluators of :func:`~rsp_d2.evaluation.build_evaluator` read for
each record of a dataset, listed without opening a file, so that it is all checked before a run
starts (``rsp_d2.engine.dataset_checks``) rather than found missing after training."""
import os
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple

from detectron2.data import MetadataCatalog
from detectron2.utils.file_io import PathManager

from .cityscapes import official_ground_truth, unmatched_ground_truth
from .panoptic import panoptic_ground_truth

__all__ = ["GROUND_TRUTH_READERS", "GroundTruthFile", "ground_truth_files"]


class GroundTruthFile(NamedTuple):
    """A file an evaluator reads for one record."""
    path: str
    image: str  # the record's file_name: the ground truth must have its size
    role: str  # what it is, plural, for messages: "labelIds files of the official ..."


# Each reader: (metadata, records) -> (files, problems found without opening a file)
_Reader = Callable[[object, Sequence[Dict]], Tuple[List[GroundTruthFile], List[str]]]


def _semantic(meta, records):
    """SemSegEvaluator: each record's ``sem_seg_file_name`` (it maps file_name to it)."""
    role = "ground truths of SemSegEvaluator (sem_seg_file_name)"
    files = [GroundTruthFile(r["sem_seg_file_name"], r["file_name"], role)
             for r in records if "sem_seg_file_name" in r]
    without = [r["file_name"] for r in records if "sem_seg_file_name" not in r]
    problems = [f"{len(without)} of {len(records)} records have no sem_seg_file_name, the ground "
                f"truth SemSegEvaluator reads (e.g. {without[0]})"] if without else []
    return files, problems


def _cityscapes_official(meta, records):
    """CityscapesOfficialSemSegEvaluator: labelIds and instanceIds of each image, and no other
    labelIds under gt_dir (it scores the whole split)."""
    gt_dir = PathManager.get_local_path(meta.gt_dir)
    files, label_ids = [], []
    for r in records:
        labels, instances = official_ground_truth(r["file_name"], gt_dir)
        label_ids.append(labels)
        files += [GroundTruthFile(labels, r["file_name"],
                                  "labelIds files of the official Cityscapes evaluation"),
                  GroundTruthFile(instances, r["file_name"],
                                  "instanceIds files of the official Cityscapes evaluation")]
    unmatched = unmatched_ground_truth(gt_dir, label_ids)
    problems = [f"{len(unmatched)} labelIds files under {gt_dir} have no image in the dataset "
                f"(e.g. {unmatched[0]}), and the official Cityscapes evaluation scores the whole "
                "split: restore the missing images (Cityscapes: leftImg8bit_trainvaltest.zip)"
                ] if unmatched else []
    return files, problems


def _coco_panoptic(meta, records):
    """COCOPanopticEvaluator: the panoptic_json annotation and panoptic_root PNG of each image,
    and no annotation without an image (panopticapi stops on those)."""
    annotations = panoptic_ground_truth(meta.panoptic_json)
    root = PathManager.get_local_path(meta.panoptic_root)
    files, without = [], []
    for r in records:
        name = annotations.get(int(r["image_id"]))
        if name is None:
            without.append(r)
        else:
            files.append(GroundTruthFile(os.path.join(root, name), r["file_name"],
                                         "panoptic PNGs of COCOPanopticEvaluator"))
    problems = []
    if without:
        problems.append(f"{len(without)} of {len(records)} images have no annotation in "
                        f"{meta.panoptic_json}, which COCOPanopticEvaluator scores against (e.g. "
                        f"image_id {without[0]['image_id']}, {without[0]['file_name']})")
    extra = sorted(set(annotations) - {int(r["image_id"]) for r in records})
    if extra:
        problems.append(f"{len(extra)} annotations of {meta.panoptic_json} have no image in the "
                        f"dataset (e.g. image_id {extra[0]}, {annotations[extra[0]]}), and "
                        "panopticapi stops on a ground truth without prediction: restore the "
                        "missing images")
    return files, problems


# evaluator_type -> what its evaluators (build.EVALUATOR_TYPES) read per record
GROUND_TRUTH_READERS: Dict[str, Tuple[_Reader, ...]] = {
    "cityscapes_sem_seg": (_cityscapes_official, _semantic),
    "coco_panoptic_seg": (_coco_panoptic, _semantic),  # COCOEvaluator: the records' own json
    "sem_seg": (_semantic,),
}


def ground_truth_files(dataset_name: str,
                       records: Sequence[Dict]) -> Tuple[List[GroundTruthFile], List[str]]:
    """The files the evaluators of `dataset_name` read for `records` (its
    ``DatasetCatalog.get``), and the problems found without opening a file: an image without
    ground truth, ground truth without image. Nothing for an evaluator_type without
    evaluators (``build_evaluator`` refuses it)."""
    meta = MetadataCatalog.get(dataset_name)
    files, problems = [], []
    for reader in GROUND_TRUTH_READERS.get(meta.get("evaluator_type", None), ()):
        more_files, more_problems = reader(meta, records)
        files += more_files
        problems += more_problems
    return files, problems
