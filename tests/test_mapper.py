"""RSPSemanticDatasetMapper (the Cityscapes recipe of Sec. IV-A) and the file-naming errors."""
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetMapper

from rsp_d2 import add_rsp_config
from rsp_d2.data import RSPSemanticDatasetMapper, build_mapper
from rsp_d2.data.mapper import DatasetRecordError, ReportFileErrors

H, W = 64, 128
IGNORE = 255


def _cfg(**overrides):
    """Semantic recipe config on H x W images: no resize (shorter side H), flip and colour
    off unless asked."""
    cfg = get_cfg()
    add_rsp_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = "rsp_semantic"
    cfg.INPUT.MIN_SIZE_TRAIN = (H,)
    cfg.INPUT.MAX_SIZE_TRAIN = 4 * W
    cfg.INPUT.CROP.ENABLED = False
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = IGNORE
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, value)
    return cfg


@pytest.fixture
def record(tmp_path):
    """A record whose labels are unique per 8 x 8 block (so any shift or flip shows) with an
    ignore region, and whose image encodes the block id too."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    labels = ((yy // 8) * (W // 8) + xx // 8) % 19
    labels[:8, :16] = IGNORE
    image = np.stack([labels * 13 % 256, xx * 2 % 256, rng.integers(0, 256, (H, W))], -1)
    image_file, label_file = tmp_path / "a_leftImg8bit.png", tmp_path / "a_labelTrainIds.png"
    Image.fromarray(image.astype(np.uint8)).save(image_file)
    Image.fromarray(labels.astype(np.uint8)).save(label_file)
    return {"file_name": str(image_file), "sem_seg_file_name": str(label_file),
            "height": H, "width": W,
            "image_bgr": image[:, :, ::-1].astype(np.uint8), "labels": labels}


def _map(cfg, record, n=1, seed=0):
    random.seed(seed)
    np.random.seed(seed)
    mapper = RSPSemanticDatasetMapper(cfg, is_train=True)
    inputs = {k: v for k, v in record.items() if k not in ("image_bgr", "labels")}
    outs = [mapper(inputs) for _ in range(n)]
    return [(o["image"].permute(1, 2, 0).numpy(), o["sem_seg"].numpy()) for o in outs]


def _find_window(big, small):
    """(y, x) of every window of `big` equal to `small`."""
    h, w = small.shape[:2]
    return [(y, x) for y in range(big.shape[0] - h + 1) for x in range(big.shape[1] - w + 1)
            if np.array_equal(big[y:y + h, x:x + w], small)]


def test_identity_without_augmentation(record):
    (image, sem_seg), = _map(_cfg(), record)
    assert image.shape == (H, W, 3) and sem_seg.shape == (H, W)
    np.testing.assert_array_equal(image, record["image_bgr"])
    np.testing.assert_array_equal(sem_seg, record["labels"])
    assert sem_seg.dtype == np.int64


def test_crop_size_and_alignment(record):
    cfg = _cfg(**{"INPUT.CROP.ENABLED": True, "INPUT.CROP.SIZE": (32, 48)})
    for image, sem_seg in _map(cfg, record, n=5):
        assert image.shape == (32, 48, 3) and sem_seg.shape == (32, 48)
        windows = _find_window(record["labels"], sem_seg)
        assert windows, "crop labels are not a window of the labels"
        # the image comes from the same window as the labels
        assert any(np.array_equal(record["image_bgr"][y:y + 32, x:x + 48], image)
                   for y, x in windows)


def test_padding_to_crop_size_uses_ignore_label(record):
    # scale jitter can make the image smaller than the crop: pad, labels ignored there
    cfg = _cfg(**{"INPUT.CROP.ENABLED": True, "INPUT.CROP.SIZE": (96, 160)})
    (image, sem_seg), = _map(cfg, record)
    assert image.shape == (96, 160, 3) and sem_seg.shape == (96, 160)
    np.testing.assert_array_equal(sem_seg[:H, :W], record["labels"])
    np.testing.assert_array_equal(image[:H, :W], record["image_bgr"])
    assert (sem_seg[H:] == IGNORE).all() and (sem_seg[:, W:] == IGNORE).all()


def test_scale_jitter_keeps_label_values(record):
    cfg = _cfg(**{"INPUT.MIN_SIZE_TRAIN": (40, 96), "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice"})
    shapes = set()
    for image, sem_seg in _map(cfg, record, n=8):
        assert image.shape[:2] == sem_seg.shape
        shapes.add(sem_seg.shape)
        # nearest-neighbour resizing: no new label values appear
        assert set(np.unique(sem_seg)) <= set(np.unique(record["labels"]))
    assert shapes == {(40, 80), (96, 192)}


def test_flip_moves_image_and_labels_together(record):
    cfg = _cfg(**{"INPUT.RANDOM_FLIP": "horizontal"})
    flipped = 0
    for image, sem_seg in _map(cfg, record, n=12):
        if np.array_equal(sem_seg, record["labels"]):
            np.testing.assert_array_equal(image, record["image_bgr"])
        else:
            np.testing.assert_array_equal(sem_seg, record["labels"][:, ::-1])
            np.testing.assert_array_equal(image, record["image_bgr"][:, ::-1])
            flipped += 1
    assert 0 < flipped < 12


def test_color_augmentation_changes_pixels_not_labels(record):
    cfg = _cfg(**{"INPUT.COLOR_AUG_SSD": True})
    changed = 0
    for image, sem_seg in _map(cfg, record, n=6):
        np.testing.assert_array_equal(sem_seg, record["labels"])
        changed += not np.array_equal(image, record["image_bgr"])
    assert changed >= 3


def test_crop_bootstrapping_avoids_single_class_crops(tmp_path):
    # class 0 but for 32 mixed columns on the right: 3/4 of the 16-pixel-wide crops are
    # dominated by class 0, and 10 redraws leave few of them
    labels = np.zeros((H, W), np.uint8)
    labels[:, 96:] = np.arange(32)[None, :] % 3 + 1
    files = {"file_name": str(tmp_path / "i.png"), "sem_seg_file_name": str(tmp_path / "l.png")}
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(files["file_name"])
    Image.fromarray(labels).save(files["sem_seg_file_name"])

    def dominated_fraction(max_area):
        cfg = _cfg(**{"INPUT.CROP.ENABLED": True, "INPUT.CROP.SIZE": (32, 16),
                      "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": max_area})
        crops = [s for _, s in _map(cfg, files, n=60)]
        return np.mean([np.bincount(s.ravel()).max() / s.size > 0.75 for s in crops])

    assert dominated_fraction(1.0) > 0.6  # plain random crops
    assert dominated_fraction(0.75) < 0.25


@pytest.mark.parametrize("is_train", [True, False])
def test_mapper_from_config(is_train):
    cfg = _cfg()
    mapper = build_mapper(cfg, is_train).mapper
    assert isinstance(mapper, RSPSemanticDatasetMapper) and mapper.is_train == is_train
    cfg.INPUT.DATASET_MAPPER_NAME = "default"
    mapper = build_mapper(cfg, is_train).mapper
    assert type(mapper) is DatasetMapper and mapper.is_train == is_train
    cfg.INPUT.DATASET_MAPPER_NAME = "nope"
    with pytest.raises(ValueError, match="rsp_semantic"):
        build_mapper(cfg, is_train)


def test_recipe_augmentations_in_order():
    cfg = _cfg(**{"INPUT.CROP.ENABLED": True, "INPUT.CROP.SIZE": (32, 48),
                  "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 0.75, "INPUT.COLOR_AUG_SSD": True,
                  "INPUT.RANDOM_FLIP": "horizontal"})
    augs = RSPSemanticDatasetMapper(cfg, is_train=True).augmentations.augs
    names = [type(getattr(a, "tfm", a)).__name__ for a in augs]  # Transforms get wrapped
    assert names == ["ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint",
                     "ColorAugSSDTransform", "RandomFlip", "PadToSize"]
    assert augs[1].single_category_max_area == 0.75 and augs[1].ignored_category == IGNORE


def _corrupt(path, how):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"not an image" * 10)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
@pytest.mark.parametrize("which", ["file_name", "sem_seg_file_name"])
def test_corrupt_file_is_named(record, which, how):
    _corrupt(Path(record[which]), how)
    with pytest.raises(DatasetRecordError, match=re.escape(record[which])):
        _map(_cfg(), record)


def test_missing_label_file_is_named(record):
    record["sem_seg_file_name"] += ".missing.png"
    with pytest.raises(DatasetRecordError, match="missing.png"):
        _map(_cfg(), record)


def test_label_size_mismatch_is_named(record):
    Image.fromarray(np.zeros((H, W // 2), np.uint8)).save(record["sem_seg_file_name"])
    with pytest.raises(DatasetRecordError, match=re.escape(record["sem_seg_file_name"])):
        _map(_cfg(), record)


def test_default_mapper_errors_name_the_file(record):
    _corrupt(Path(record["file_name"]), "garbage")
    cfg = _cfg()
    mapper = ReportFileErrors(DatasetMapper(cfg, is_train=False))
    with pytest.raises(DatasetRecordError, match=re.escape(record["file_name"])):
        mapper({"file_name": record["file_name"], "height": H, "width": W})
