"""Helpers of the tests that run the command-line tools on tiny models and synthetic data."""
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SIZE = (256, 512)  # (height, width) of the synthetic Cityscapes images

# Overrides making a config tiny and fast: ResNet-18, 64 channels, inputs kept at 256 x 512.
_TINY = """\
_BASE_: "{base}"
MODEL:
  WEIGHTS: ""
  DEVICE: "cpu"
  RESNETS:
    DEPTH: 18
    RES2_OUT_CHANNELS: 64
    NORM: "GN"
  FPN:
    OUT_CHANNELS: 64
  SEM_SEG_HEAD:
    CONVS_DIM: 64
INPUT:
  MIN_SIZE_TEST: 256
  MAX_SIZE_TEST: 512
DATASETS:
  TEST: ("cityscapes_fine_sem_seg_val",)
"""


def make_tiny(directory, name, base):
    """A tiny config based on `base` and a checkpoint of its random initialization (seeded)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from rsp_d2.config import load_config

    cfg_path = os.path.join(directory, f"{name}.yaml")
    with open(cfg_path, "w") as f:
        f.write(_TINY.format(base=os.path.join(REPO, base)))
    torch.manual_seed(0)
    model = build_model(load_config(cfg_path))
    DetectionCheckpointer(model, save_dir=str(directory)).save(name)
    return cfg_path, os.path.join(directory, f"{name}.pth")


def run_tool(*args, cwd=REPO):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def assert_ok(proc):
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def assert_clear_error(proc, *fragments):
    """Failed with one `error: ...` line (no traceback) that contains every fragment."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr
    for fragment in fragments:
        assert str(fragment) in last, f"{fragment!r} not in {last!r}"


def assert_png(path, size):
    """A non-empty PNG of `size` (width, height) whose pixels are not all equal."""
    assert os.path.getsize(path) > 0
    image = Image.open(path)
    assert image.format == "PNG"
    assert image.size == size
    pixels = np.asarray(image.convert("RGB"))
    assert pixels.reshape(-1, 3).std(axis=0).max() > 5, f"{path} is (nearly) constant"
    return pixels
