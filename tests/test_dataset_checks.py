"""What train_net checks in the datasets before it starts (rsp_d2.engine.dataset_checks): every
record of the train and val splits, as Detectron2's loaders list them, has its files, at the
size of its image, and every val image has the ground truth its evaluators read.

Each test breaks a copy of the synthetic Cityscapes (or COCO) in tmp_path, registered in this
process as Detectron2 registers the builtin splits (its own loaders and metadata, test-only
names), so DETECTRON2_DATASETS plays no part; tests/test_user_errors.py runs train_net.py on the
builtin names.
"""
import json
import os
import shutil
import uuid

import pytest
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_panoptic_separated
from detectron2.data.datasets.cityscapes import load_cityscapes_semantic
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

from rsp_d2 import add_rsp_config
from rsp_d2.engine import cli
from rsp_d2.engine.dataset_checks import DatasetNotFoundError, check_dataset_records
from rsp_d2.evaluation import EVALUATOR_TYPES, GROUND_TRUTH_READERS
from rsp_d2.utils.errors import InputError
from support.train_net import SEMANTIC_TINY

GT_ZIP = "restore them from Cityscapes' gtFine_trainvaltest.zip"
RESIZED = ("a label is read pixel for pixel with its image; replace them with the "
           "full-resolution ground truth")


def _register_cityscapes(root, split):
    """`split` of ``root/cityscapes`` registered as ``cityscapes_fine_sem_seg_<split>`` is."""
    image_dir = os.path.join(root, "cityscapes", "leftImg8bit", split, "")
    gt_dir = os.path.join(root, "cityscapes", "gtFine", split, "")
    name = f"rsp_test_cityscapes_{split}_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: load_cityscapes_semantic(image_dir, gt_dir))
    MetadataCatalog.get(name).set(image_dir=image_dir, gt_dir=gt_dir,
                                  evaluator_type="cityscapes_sem_seg", ignore_label=255,
                                  **_get_builtin_metadata("cityscapes"))
    return name


def _register_coco(root, split):
    """`split` of ``root/coco`` registered as ``coco_2017_<split>_panoptic_separated`` is."""
    coco = os.path.join(root, "coco")
    name = f"rsp_test_coco_{split}_{uuid.uuid4().hex[:8]}"
    register_coco_panoptic_separated(
        name, _get_builtin_metadata("coco_panoptic_separated"), os.path.join(coco, f"{split}2017"),
        os.path.join(coco, f"panoptic_{split}2017"),
        os.path.join(coco, "annotations", f"panoptic_{split}2017.json"),
        os.path.join(coco, f"panoptic_stuff_{split}2017"),
        os.path.join(coco, "annotations", f"instances_{split}2017.json"))
    return name + "_separated"


class Cityscapes:
    """A copy of the synthetic Cityscapes in a temporary folder, its splits registered."""

    def __init__(self, synthetic_root, root):
        shutil.copytree(synthetic_root / "cityscapes", root / "cityscapes")
        self.root = root / "cityscapes"
        self.train = _register_cityscapes(root, "train")
        self.val = _register_cityscapes(root, "val")

    def last(self, split):
        """(image, gt stem) of the last record of `split` in the loader's order: the loader
        itself asserts the files of the first one."""
        image = DatasetCatalog.get(getattr(self, split))[-1]["file_name"]
        return image, image.replace("leftImg8bit", "gtFine")[: -len(".png")]


@pytest.fixture
def cityscapes(synthetic_root, tmp_path):
    return Cityscapes(synthetic_root, tmp_path)


def _cfg(train=(), test=()):
    cfg = get_cfg()
    add_rsp_config(cfg)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), tuple(test)
    return cfg


def _refusal(error, train=(), test=(), eval_only=False):
    with pytest.raises(error) as e:
        check_dataset_records(_cfg(train, test), eval_only=eval_only)
    return str(e.value)


def _resize(path):
    """Rewrite the PNG `path` at half its width and height."""
    image = Image.open(path)
    image.resize((image.width // 2, image.height // 2), Image.NEAREST).save(path)


def test_complete_datasets_pass(synthetic_root):
    check_dataset_records(_cfg([_register_cityscapes(synthetic_root, "train")],
                               [_register_cityscapes(synthetic_root, "val")]))
    check_dataset_records(_cfg([_register_coco(synthetic_root, "train")],
                               [_register_coco(synthetic_root, "val")]))


def test_every_evaluator_type_lists_its_ground_truth():
    assert GROUND_TRUTH_READERS.keys() == EVALUATOR_TYPES.keys()


@pytest.mark.parametrize("suffix,role,how", [
    ("labelIds", "labelIds files of the official Cityscapes evaluation", GT_ZIP),
    ("instanceIds", "instanceIds files of the official Cityscapes evaluation", GT_ZIP),
    ("labelTrainIds", "ground truths of SemSegEvaluator (sem_seg_file_name)",
     "make the train-id labels with cityscapesscripts' csCreateTrainIdLabelImgs"),
])
def test_val_image_without_ground_truth(cityscapes, suffix, role, how):
    """Without its labelIds, the official evaluation scored the other images as if they were
    the whole split (and the others stopped the run after training)."""
    gt = f"{cityscapes.last('val')[1]}_{suffix}.png"
    os.remove(gt)
    assert _refusal(DatasetNotFoundError, test=[cityscapes.val]) == \
        f"dataset '{cityscapes.val}' (DATASETS.TEST): 1 of 8 {role} do not exist (e.g. {gt}): {how}"


def test_first_val_image_without_ground_truth(cityscapes):
    """Detectron2's loader asserts the files of the first image itself (AssertionError: path)."""
    image = DatasetCatalog.get(cityscapes.val)[0]["file_name"]
    gt = image.replace("leftImg8bit", "gtFine")[: -len(".png")] + "_labelIds.png"
    os.remove(gt)
    assert _refusal(DatasetNotFoundError, test=[cityscapes.val]) == (
        f"dataset '{cityscapes.val}' (DATASETS.TEST): its Detectron2 loader needs {gt}, which "
        f"does not exist: {GT_ZIP}")


def test_val_ground_truth_without_image(cityscapes):
    image, gt = cityscapes.last("val")
    os.remove(image)
    assert _refusal(DatasetNotFoundError, test=[cityscapes.val]) == (
        f"dataset '{cityscapes.val}' (DATASETS.TEST): 1 labelIds files under "
        f"{cityscapes.root}/gtFine/val/ have no image in the dataset (e.g. {gt}_labelIds.png), and "
        "the official Cityscapes evaluation scores the whole split: restore the missing images "
        "(Cityscapes: leftImg8bit_trainvaltest.zip)")


def test_train_label_missing(cityscapes):
    label = f"{cityscapes.last('train')[1]}_labelTrainIds.png"
    os.remove(label)
    assert _refusal(DatasetNotFoundError, train=[cityscapes.train]) == (
        f"dataset '{cityscapes.train}' (DATASETS.TRAIN): 1 of 24 labels (sem_seg_file_name) do "
        f"not exist (e.g. {label}): make the train-id labels with cityscapesscripts' "
        "csCreateTrainIdLabelImgs")


def test_train_labels_never_made(cityscapes):
    """Detectron2's loader asserts on the first record (AssertionError, no file named)."""
    for label in cityscapes.root.glob("gtFine/train/*/*_labelTrainIds.png"):
        label.unlink()
    assert _refusal(DatasetNotFoundError, train=[cityscapes.train]) == (
        f"dataset '{cityscapes.train}' (DATASETS.TRAIN): its Detectron2 loader failed: "
        "AssertionError: Please generate labelTrainIds.png with "
        "cityscapesscripts/preparation/createTrainIdLabelImgs.py; fix the dataset's files, or "
        f"remove '{cityscapes.train}' from DATASETS.TRAIN")


@pytest.mark.parametrize("split,key,eval_only", [("train", "DATASETS.TRAIN", False),
                                                 ("val", "DATASETS.TEST", False),
                                                 ("val", "DATASETS.TEST", True)])
def test_empty_split(cityscapes, split, key, eval_only):
    images = cityscapes.root / "leftImg8bit" / split
    for city in images.iterdir():
        shutil.rmtree(city)
    name = getattr(cityscapes, split)
    assert _refusal(DatasetNotFoundError, [cityscapes.train], [cityscapes.val], eval_only) == (
        f"dataset '{name}' ({key}): the split is empty: image_dir {images} holds no files; put "
        f"its images there, or remove '{name}' from {key}")


def test_eval_only_reads_no_train_split(cityscapes):
    shutil.rmtree(cityscapes.root / "leftImg8bit" / "train")
    check_dataset_records(_cfg([cityscapes.train], [cityscapes.val]), eval_only=True)


@pytest.mark.parametrize("split,suffix,role", [
    ("val", "labelIds", "labelIds files of the official Cityscapes evaluation"),
    ("train", "labelTrainIds", "labels (sem_seg_file_name)"),
])
def test_label_of_another_size(cityscapes, split, suffix, role):
    """cityscapesscripts printed "ERROR: Image widths ... are not equal" and exited 255, after
    training."""
    image, gt = cityscapes.last(split)
    _resize(f"{gt}_{suffix}.png")
    key, total = ("DATASETS.TRAIN", 24) if split == "train" else ("DATASETS.TEST", 8)
    assert _refusal(InputError, [cityscapes.train], [cityscapes.val]) == (
        f"dataset '{getattr(cityscapes, split)}' ({key}): 1 of {total} {role} do not have the "
        f"size of their image (e.g. {gt}_{suffix}.png is 256x128, {image} is 512x256): "
        f"{RESIZED}")


def test_unreadable_label(cityscapes):
    label = f"{cityscapes.last('train')[1]}_labelTrainIds.png"
    with open(label, "wb") as f:
        f.write(b"not a png")
    assert _refusal(InputError, train=[cityscapes.train]).startswith(
        f"dataset '{cityscapes.train}' (DATASETS.TRAIN): 1 of 24 labels (sem_seg_file_name) "
        f"cannot be read (e.g. {label}: cannot identify image file")


@pytest.fixture
def coco(synthetic_root, tmp_path):
    shutil.copytree(synthetic_root / "coco", tmp_path / "coco")
    return tmp_path / "coco", _register_coco(tmp_path, "val")


def test_coco_panoptic_png_missing(coco):
    root, name = coco
    png = sorted((root / "panoptic_val2017").iterdir())[-1]
    png.unlink()
    assert _refusal(DatasetNotFoundError, test=[name]) == (
        f"dataset '{name}' (DATASETS.TEST): 1 of 8 panoptic PNGs of COCOPanopticEvaluator do "
        f"not exist (e.g. {png}): restore them from COCO's panoptic_annotations_trainval2017.zip")


def test_coco_image_without_panoptic_annotation(coco):
    """panopticapi scores the images of the json and silently ignores other predictions."""
    root, name = coco
    path = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(path.read_text())
    dropped = data["annotations"].pop()
    path.write_text(json.dumps(data))
    image = root / "val2017" / dropped["file_name"].replace(".png", ".jpg")
    assert _refusal(DatasetNotFoundError, test=[name]) == (
        f"dataset '{name}' (DATASETS.TEST): 1 of 8 images have no annotation in {path}, which "
        f"COCOPanopticEvaluator scores against (e.g. image_id {dropped['image_id']}, {image})")


# --- through train_net's entry point: refused before anything is written ---------------------

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of the tiny semantic model (random init): what --eval-only loads."""
    from detectron2.modeling import build_model

    from rsp_d2.config import load_config

    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.manual_seed(0)
    torch.save({"model": build_model(load_config(SEMANTIC_TINY)).state_dict()}, path)
    return path


def _break(cityscapes, fault):
    """Apply `fault` to the copy; the start of the error line expected."""
    image, gt = cityscapes.last("val" if fault.startswith("val") else "train")
    if fault == "val-labelIds-missing":
        os.remove(f"{gt}_labelIds.png")
        return f"dataset '{cityscapes.val}' (DATASETS.TEST): 1 of 8 labelIds files of the " \
               f"official Cityscapes evaluation do not exist (e.g. {gt}_labelIds.png)"
    if fault == "train-labelTrainIds-missing":
        os.remove(f"{gt}_labelTrainIds.png")
        return f"dataset '{cityscapes.train}' (DATASETS.TRAIN): 1 of 24 labels " \
               f"(sem_seg_file_name) do not exist (e.g. {gt}_labelTrainIds.png)"
    if fault in ("train-empty", "val-empty"):
        split = fault.split("-")[0]
        folder = cityscapes.root / "leftImg8bit" / split
        shutil.rmtree(folder)
        folder.mkdir()
        name, key = (cityscapes.train, "DATASETS.TRAIN") if split == "train" else \
            (cityscapes.val, "DATASETS.TEST")
        return f"dataset '{name}' ({key}): the split is empty: image_dir {folder} holds no files"
    assert fault == "val-labelIds-resized", fault
    _resize(f"{gt}_labelIds.png")
    return f"dataset '{cityscapes.val}' (DATASETS.TEST): 1 of 8 labelIds files of the official " \
           f"Cityscapes evaluation do not have the size of their image"


@pytest.mark.parametrize("fault,eval_only", [
    ("val-labelIds-missing", False), ("train-labelTrainIds-missing", False),
    ("train-empty", False), ("val-empty", True), ("val-labelIds-resized", True)])
def test_train_net_refuses_before_writing(cityscapes, weights, tmp_path, capsys, fault, eval_only):
    expected = _break(cityscapes, fault)
    out = tmp_path / "out"
    mode = ["--eval-only", "MODEL.WEIGHTS", weights] if eval_only else []
    code = cli([str(a) for a in ["--config-file", SEMANTIC_TINY, *mode, "DATASETS.TRAIN",
                                 f"('{cityscapes.train}',)", "DATASETS.TEST",
                                 f"('{cityscapes.val}',)", "OUTPUT_DIR", out]])
    stdout, stderr = capsys.readouterr()
    assert code == 2, (stdout[-3000:], stderr[-3000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), stderr
    assert not out.exists(), "a refused run wrote files (config.yaml, log.txt)"
