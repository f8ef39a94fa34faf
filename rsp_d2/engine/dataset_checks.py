"""A check, before any worker starts, that the configured datasets are where Detectron2 looks."""
import os
from typing import Iterable, List

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["DatasetNotFoundError", "check_datasets", "datasets_of"]

# Metadata fields of Detectron2's dataset registrations that name files or folders on disk.
_PATH_FIELDS = ("image_root", "image_dir", "gt_dir", "json_file", "panoptic_root",
                "panoptic_json", "sem_seg_root")


class DatasetNotFoundError(FileNotFoundError):
    """A configured dataset is not registered, or its files are not on disk."""


def datasets_of(cfg, eval_only: bool = False) -> List[str]:
    """The dataset names a run reads: DATASETS.TEST, plus DATASETS.TRAIN when training."""
    names = list(cfg.DATASETS.TEST)
    if not eval_only:
        names = list(cfg.DATASETS.TRAIN) + names
    return list(dict.fromkeys(names))


def check_datasets(names: Iterable[str]) -> None:
    """Raise one :class:`DatasetNotFoundError` listing every dataset path that does not exist.

    Without this, each rank and each data-loader worker fails on its own, deep in a loader,
    with a bare path and no hint that builtin datasets are resolved under
    ``$DETECTRON2_DATASETS`` as it was when ``detectron2.data`` was first imported.
    """
    problems = []
    for name in names:
        if name not in DatasetCatalog.list():
            problems.append(f"dataset {name!r} is not registered in DatasetCatalog")
            continue
        meta = MetadataCatalog.get(name)
        for field in _PATH_FIELDS:
            path = meta.get(field, None)
            if isinstance(path, str) and "://" not in path and not os.path.exists(path):
                path = os.path.normpath(path)
                top = _topmost_missing(path)
                problems.append(f"dataset {name!r}: {field} {path} does not exist" +
                                (f" ({top} does not exist)" if top != path else ""))
    if problems:
        root = os.environ.get("DETECTRON2_DATASETS")
        where = (f"DETECTRON2_DATASETS={root}" if root is not None
                 else "DETECTRON2_DATASETS is not set, so ./datasets is used")
        if not os.path.isabs(root or "datasets"):
            where += f", relative to the current directory {os.getcwd()}"
        raise DatasetNotFoundError(
            "\n  ".join(["cannot find the configured datasets:"] + problems) +
            f"\nDetectron2's builtin datasets are looked up under $DETECTRON2_DATASETS ({where}); "
            "it must be set before detectron2 is imported. For the synthetic stand-ins run "
            "`python tools/make_synthetic_datasets.py --root DIR` and set DETECTRON2_DATASETS=DIR.")


def _topmost_missing(path: str) -> str:
    """The shallowest missing folder on the way to `path`: the one to fix."""
    parent = os.path.dirname(path)
    while parent and parent != path and not os.path.exists(parent):
        path, parent = parent, os.path.dirname(parent)
    return path
