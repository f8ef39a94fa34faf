"""demo/demo.py and its predictor (demo/predictor.py), on the synthetic Cityscapes with tiny
checkpoints (conftest's ``tiny``)."""
import glob
import os
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from support.tools import IMAGE_SIZE, REPO, assert_clear_error, assert_ok, assert_png, call_main

sys.path.insert(0, os.path.join(REPO, "demo"))


# ----------------------------------------------------------------------------------- demo

@pytest.mark.slow
def test_demo_draws_semantic_predictions(tiny, val_images, tmp_path):
    cfg, ckpt = tiny["rsp"]
    out = tmp_path / "demo"
    proc = call_main("demo/demo.py", "--config-file", cfg, "--input", val_images[0],
                     "--output", out, "--opts", "MODEL.WEIGHTS", ckpt)
    assert_ok(proc)
    written = out / os.path.basename(val_images[0])
    drawn = assert_png(written, (IMAGE_SIZE[1], IMAGE_SIZE[0]))
    original = np.asarray(Image.open(val_images[0]).convert("RGB"))
    assert np.abs(drawn.astype(int) - original).mean() > 5  # the segmentation is drawn over it
    assert "images" in proc.stderr and "100%" in proc.stderr  # tqdm progress bar


@pytest.mark.slow
def test_demo_video(tiny, val_images, tmp_path):
    cfg, ckpt = tiny["rsp"]
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5,
                             (IMAGE_SIZE[1], IMAGE_SIZE[0]))
    for path in val_images[:2]:
        writer.write(cv2.imread(path))
    writer.release()
    proc = call_main("demo/demo.py", "--config-file", cfg, "--video-input", video,
                     "--output", tmp_path / "out", "--opts", "MODEL.WEIGHTS", ckpt)
    assert_ok(proc)
    result = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    frames = []
    while True:
        ok, frame = result.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 2 and frames[0].shape == (*IMAGE_SIZE, 3)
    assert frames[0].std() > 5
    assert os.listdir(tmp_path / "out") == ["clip.mp4"]  # no temporary file left


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_checkpoint", "unreadable_image"])
def test_demo_refuses_bad_input(case, tiny, val_images, unreadable_image, tmp_path):
    cfg, ckpt = tiny["rsp"]
    inputs = [val_images[0]]
    if case == "missing_checkpoint":
        ckpt = str(tmp_path / "missing.pth")
        expected = ["checkpoint not found", ckpt]
    else:
        inputs, expected = [unreadable_image], ["cannot read image", unreadable_image]
    proc = call_main("demo/demo.py", "--config-file", cfg, "--input", *inputs,
                     "--output", tmp_path / "out", "--opts", "MODEL.WEIGHTS", ckpt)
    assert_clear_error(proc, *expected)


def test_demo_metadata_has_fixed_cityscapes_colours(tiny):
    """Detectron2's Cityscapes metadata has no colours (random ones would be drawn); the
    demo's copy has the official ones, and the catalog's entry is left alone."""
    from detectron2.data import MetadataCatalog

    from predictor import demo_metadata

    from rsp_d2.config import load_config

    meta = demo_metadata(load_config(tiny["rsp"][0]))
    assert meta.stuff_classes[:3] == ["road", "sidewalk", "building"]
    assert meta.stuff_colors[:3] == [(128, 64, 128), (244, 35, 232), (70, 70, 70)]
    assert not MetadataCatalog.get("cityscapes_fine_sem_seg_val").get("stuff_colors")


def test_demo_inputs_and_outputs(val_images, tmp_path):
    from predictor import expand_inputs, output_paths

    from rsp_d2.engine import check_checkpoint
    from rsp_d2.utils.errors import InputError

    with pytest.raises(InputError, match="MODEL.WEIGHTS is empty"):
        check_checkpoint("")
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.jpg")])
    with pytest.raises(InputError, match="image not found"):
        expand_inputs([str(tmp_path / "a.png")])
    val_dir = os.path.dirname(os.path.dirname(val_images[0]))  # leftImg8bit/val: city folders
    found = expand_inputs([val_dir, val_images[0]])  # a folder, recursively; no duplicates
    assert [p for p, _ in found] == sorted(glob.glob(os.path.join(val_dir, "*", "*.png")))
    assert found[0][1] == os.path.relpath(val_images[0], val_dir)
    targets = output_paths(found, str(tmp_path / "out"))
    assert targets[0] == str(tmp_path / "out" / found[0][1])
    assert output_paths(found[:1], str(tmp_path / "one.jpg")) == [str(tmp_path / "one.jpg")]
    with pytest.raises(InputError, match="would be written to"):
        output_paths([("a/x.png", "x.png"), ("b/x.png", "x.png")], str(tmp_path / "out"))


def test_demo_draws_panoptic_predictions():
    """Panoptic FPN outputs go through Visualizer.draw_panoptic_seg (no model needed)."""
    from detectron2.data import MetadataCatalog

    from predictor import SegmentationDemo

    from rsp_d2.config import load_config

    cfg = load_config(os.path.join(REPO, "configs/coco/panoptic_rsp4.yaml"), cpu_if_no_cuda=True)
    seg = torch.zeros(64, 96, dtype=torch.int32)
    seg[:, 48:] = 1
    seg[10:30, 10:30] = 2
    predictions = {"panoptic_seg": (seg, [
        {"id": 1, "category_id": 1, "isthing": False, "area": int((seg == 1).sum())},
        {"id": 2, "category_id": 0, "isthing": True, "score": 0.9, "area": 400}])}
    demo = SegmentationDemo(cfg, predictor=lambda image, **kwargs: predictions)
    assert "person" in demo.metadata.thing_classes
    assert demo.metadata.stuff_colors == MetadataCatalog.get(cfg.DATASETS.TEST[0]).stuff_colors
    image = np.full((64, 96, 3), 127, dtype=np.uint8)
    out, vis = demo.run_on_image(image)
    drawn = vis.get_image()
    assert out is predictions and drawn.shape == (64, 96, 3)
    assert np.abs(drawn[:, 48:].astype(int) - 127).mean() > 5  # the stuff segment
    assert np.abs(drawn[12:28, 12:28].astype(int) - 127).mean() > 5  # the person
