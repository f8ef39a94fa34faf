"""Checks, before any worker starts, that the configured datasets are where Detectron2 looks
(:func:`check_datasets`) and that every record has what training and evaluation will read
(:func:`check_dataset_records`)."""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..data.headers import header_size
from ..evaluation.ground_truth import GroundTruthFile, ground_truth_files
from ..utils.errors import InputError

__all__ = ["DatasetNotFoundError", "check_dataset_records", "check_datasets", "datasets_of"]

# Metadata fields of Detectron2's dataset registrations that name files or folders on disk.
_PATH_FIELDS = ("image_root", "image_dir", "gt_dir", "json_file", "panoptic_root",
                "panoptic_json", "sem_seg_root")


class DatasetNotFoundError(InputError, FileNotFoundError):
    """A configured dataset is not registered, or its files are not on disk: a user error
    (:class:`InputError`) and a FileNotFoundError."""


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


# The label files of a record that the data loaders read (Detectron2's DatasetMapper and ours).
_LABEL_KEYS = ("sem_seg_file_name", "pan_seg_file_name")
# Where a missing file comes from, by a part of its path; the first match applies.
_RESTORE = (
    ("_gtFine_labelTrainIds.png", "make the train-id labels with cityscapesscripts' "
                                  "csCreateTrainIdLabelImgs"),
    ("_gtFine_", "restore them from Cityscapes' gtFine_trainvaltest.zip"),
    ("_leftImg8bit.png", "restore them from Cityscapes' leftImg8bit_trainvaltest.zip"),
    ("panoptic_stuff_", "make them with tools/prepare_panoptic_fpn.py"),
    ("panoptic_", "restore them from COCO's panoptic_annotations_trainval2017.zip"),
)
# Header reads are I/O bound (a network file system, a cold disk): threads overlap them.
_READERS = 16


def check_dataset_records(cfg, eval_only: bool = False) -> None:
    """Raise on the first dataset whose records a run of `cfg` cannot read in full.

    Reads each dataset of DATASETS.TRAIN (unless `eval_only`) and DATASETS.TEST through
    ``DatasetCatalog.get``, as training and evaluation will, and refuses a dataset that cannot
    be loaded or is empty; an image or a label (``sem_seg_file_name``, ``pan_seg_file_name``)
    that is missing or unreadable, or of another size than its image or record; and for
    DATASETS.TEST, an image without the ground truth its evaluators read
    (``rsp_d2.evaluation.ground_truth``), or ground truth without its image. Reads file headers
    only, never pixels. Expects :func:`check_datasets` to have passed.

    Without it, Detectron2's loaders fail with a bare ``AssertionError`` once the workers
    started, an empty or incomplete val split shows only after training, and cityscapesscripts
    either exits the process or scores the images that have ground truth as if they were all.

    Raises:
        DatasetNotFoundError: a dataset that cannot be loaded or is empty, a missing file.
        InputError: an unreadable file, or one of another size than its image.
    """
    splits = [("DATASETS.TEST", name) for name in cfg.DATASETS.TEST]
    if not eval_only:
        splits = [("DATASETS.TRAIN", name) for name in cfg.DATASETS.TRAIN] + splits
    loaded: Dict[str, List[Dict]] = {}  # a dataset in both lists is read once
    for key, name in splits:
        if name not in loaded:
            loaded[name] = _load_records(name, key)
        records = loaded[name]
        files = [GroundTruthFile(r[k], r["file_name"], f"labels ({k})")
                 for r in records for k in _LABEL_KEYS if k in r]
        problems = []
        if key == "DATASETS.TEST":
            # the evaluators' roles first: they name the file in a message
            ground_truth, problems = ground_truth_files(name, records)
            files = ground_truth + files
        _check_files(name, key, records, files, problems)


def _fail(error, name: str, key: str, message: str):
    return error(f"dataset {name!r} ({key}): {message}")


def _load_records(name: str, key: str) -> List[Dict]:
    """The records of `name`, or an error naming the split and why it has none."""
    meta = MetadataCatalog.get(name)
    for field in ("image_dir", "image_root"):
        folder = meta.get(field, None)
        if isinstance(folder, str) and os.path.isdir(folder) and not _has_files(folder):
            raise _fail(DatasetNotFoundError, name, key,
                        f"the split is empty: {field} {os.path.normpath(folder)} holds no files; "
                        f"put its images there, or remove {name!r} from {key}")
    try:
        records = DatasetCatalog.get(name)
    except Exception as e:  # the loaders' asserts, a missing or malformed annotation file
        message = " ".join(str(e).split()) or "(no message)"
        path = message.strip("'\"")  # `assert isfile(path), path`; KeyError(path)
        if os.path.isabs(path) and not os.path.exists(path):
            raise _fail(DatasetNotFoundError, name, key,
                        f"its Detectron2 loader needs {path}, which does not exist: "
                        f"{_how_to_restore(path)}") from e
        raise _fail(DatasetNotFoundError, name, key,
                    f"its Detectron2 loader failed: {type(e).__name__}: {message}; fix the "
                    f"dataset's files, or remove {name!r} from {key}") from e
    if not records:
        raise _fail(DatasetNotFoundError, name, key,
                    f"the split is empty: its loader returned no records; add its images, or "
                    f"remove {name!r} from {key}")
    return records


def _has_files(folder: str) -> bool:
    return any(files for _, _, files in os.walk(folder))


def _check_files(name: str, key: str, records: Sequence[Dict],
                 files: Sequence[GroundTruthFile], problems: Sequence[str]):
    """Raise on the first of: missing images, `problems`, missing files, unreadable files,
    images of another size than their record, files of another size than their image."""
    # role -> [(path, its image)], each path once, under its first role
    groups: Dict[str, List[Tuple[str, Optional[str]]]] = {
        "images": [(r["file_name"], None) for r in records]}
    seen = {r["file_name"] for r in records}
    for f in files:
        if f.path not in seen:
            seen.add(f.path)
            groups.setdefault(f.role, []).append((f.path, f.image))
    paths = [path for group in groups.values() for path, _ in group]
    with ThreadPoolExecutor(min(_READERS, len(paths))) as pool:
        sizes = dict(zip(paths, pool.map(_size_or_error, paths)))

    def first(role, bad, problem):
        return f"{len(bad)} of {len(groups[role])} {role} {problem}"

    for role, group in groups.items():
        missing = [p for p, _ in group if isinstance(sizes[p], FileNotFoundError)]
        if missing:
            raise _fail(DatasetNotFoundError, name, key, first(
                role, missing, f"do not exist (e.g. {missing[0]}): {_how_to_restore(missing[0])}"))
        if role == "images" and problems:  # found from the listing of existing images
            raise _fail(DatasetNotFoundError, name, key, problems[0])
    for role, group in groups.items():
        unreadable = [p for p, _ in group if isinstance(sizes[p], OSError)]
        if unreadable:
            raise _fail(InputError, name, key, first(
                role, unreadable, f"cannot be read (e.g. {unreadable[0]}: "
                f"{sizes[unreadable[0]]}): replace them"))
    resized = [r for r in records if "width" in r and "height" in r and
               sizes[r["file_name"]] != (r["width"], r["height"])]
    if resized:
        image, size = resized[0]["file_name"], (resized[0]["width"], resized[0]["height"])
        raise _fail(InputError, name, key, first(
            "images", resized, f"do not have the size of their record (e.g. {image} is "
            f"{_wxh(sizes[image])}, its annotation says {_wxh(size)}): replace the image or fix "
            "its annotation"))
    for role, group in list(groups.items())[1:]:
        resized = [(p, image) for p, image in group if sizes[p] != sizes[image]]
        if resized:
            path, image = resized[0]
            raise _fail(InputError, name, key, first(
                role, resized, f"do not have the size of their image (e.g. {path} is "
                f"{_wxh(sizes[path])}, {image} is {_wxh(sizes[image])}): a label is read pixel "
                "for pixel with its image; replace them with the full-resolution ground truth"))


def _size_or_error(path: str) -> Union[Tuple[int, int], OSError]:
    try:
        return header_size(path)
    except OSError as e:  # FileNotFoundError: missing; others (UnidentifiedImageError): unreadable
        return e


def _how_to_restore(path: str) -> str:
    for part, how in _RESTORE:
        if part in path:
            return how
    return "restore them, or fix the dataset's registration"


def _wxh(size: Tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
