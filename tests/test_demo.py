"""tools/train_demo.py (`make demo`) and the demo configs."""
import re

import numpy as np
import pytest
from PIL import Image

from rsp_d2 import load_config
from support.tools import run_script
from support.train_net import PANOPTIC_TINY, REPO, SEMANTIC_TINY, results

DEMO_CONFIG = "configs/synthetic/rsp4_R18.yaml"


@pytest.mark.parametrize("config", [DEMO_CONFIG, SEMANTIC_TINY, PANOPTIC_TINY])
def test_demo_configs_select_cpu_no_weights_r18_and_rsp4(config):
    cfg = load_config(str(REPO / config))
    assert cfg.MODEL.DEVICE == "cpu" and cfg.MODEL.WEIGHTS == ""
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.RESNETS.NORM != "FrozenBN"
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_fpn_p2p7_backbone"
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == "RSPHead"
    assert list(cfg.MODEL.SEM_SEG_HEAD.RSP.FUSION) == ["rsp"] * 4 + ["sum"]


def test_demo_config_keeps_the_cityscapes_recipe():
    cfg = load_config(str(REPO / DEMO_CONFIG))
    assert cfg.INPUT.DATASET_MAPPER_NAME == "rsp_semantic"
    assert cfg.INPUT.COLOR_AUG_SSD and cfg.INPUT.RANDOM_FLIP == "horizontal"
    assert cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA < 1.0
    # the paper's 0.5x-2.0x scale jitter and 1:2 crop, at the synthetic images' 256 x 512
    assert min(cfg.INPUT.MIN_SIZE_TRAIN) == 128 and max(cfg.INPUT.MIN_SIZE_TRAIN) == 512
    assert tuple(cfg.INPUT.CROP.SIZE) == (128, 256)
    assert cfg.MODEL.PIXEL_MEAN and cfg.RSP_D2.LOG_PERIOD <= 20  # progress is visible


@pytest.mark.slow
def test_train_demo_end_to_end(synthetic_root, tmp_path):
    """The demo's code path on the tiny config (the real demo trains for minutes)."""
    proc = run_script(REPO / "tools" / "train_demo.py", "--data-root", synthetic_root,
                      "--config-file", REPO / SEMANTIC_TINY, "--output-dir", tmp_path,
                      "--num-overlays", "2", data_root="unused: train_demo sets it")
    assert proc.returncode == 0, proc.stdout[-8000:]
    log = proc.stdout
    assert "already there, reused" in log  # the session's synthetic data, not regenerated
    assert re.search(r"iter: 5 .*total_loss", log)  # training progress
    res = results(tmp_path)
    official, d2 = res["cityscapes_sem_seg"]["IoU"], res["sem_seg"]["mIoU"]
    table = log[log.index("official IoU"):]
    assert re.search(rf"mean \(mIoU\)\s+{official:5.1f}\s+{d2:5.1f}", table)
    # no truck in the data: official IoU 0 if predicted somewhere, SemSegEvaluator leaves it out
    assert re.search(r"\nroad\s+[\d.]+\s+[\d.]+", table) and re.search(r"\ntruck\s+\S+\s+-", table)
    overlays = sorted((tmp_path / "overlays").glob("*_overlay.png"))
    assert len(overlays) == 2
    for path in overlays:
        assert path.name.startswith(("frankfurt_", "lindau_", "munster_"))
        image = np.asarray(Image.open(path))
        assert image.shape == (256, 3 * 512, 3)
        # the three panels differ: ground truth and prediction are drawn over the image
        left, middle, right = np.split(image.astype(int), 3, axis=1)
        assert np.abs(left - middle).mean() > 5 and np.abs(left - right).mean() > 5
    assert re.search(r"official Cityscapes mIoU [\d.]+%.*total wall time \d+s", log)
