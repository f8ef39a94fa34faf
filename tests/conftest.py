"""Shared pytest fixtures."""
import glob

import pytest

from tool_utils import make_tiny


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A ``pathlib.Path`` holding ``cityscapes/`` and ``coco/`` synthetic datasets, generated
    once per test session (seed 0, default sizes: Cityscapes 24 train / 8 val, COCO 16 / 8).

    Use it as ``DETECTRON2_DATASETS``. Detectron2 binds its builtin dataset names to that
    variable when ``detectron2.data`` is first imported (``import rsp_d2`` does so), so load them
    in a subprocess whose environment sets it.
    """
    from rsp_d2.data.synthetic import generate_datasets

    root = tmp_path_factory.mktemp("synthetic_datasets")
    generate_datasets(root, seed=0)
    return root


@pytest.fixture(scope="session")
def semantic_run(synthetic_root, tmp_path_factory):
    """(OUTPUT_DIR, log) of one uninterrupted train_net.py run of the tiny semantic config
    (6 iterations, checkpoints after iterations 2 and 5, evaluated), shared by the tests."""
    from train_net_utils import SEMANTIC_TINY, train_net

    out = tmp_path_factory.mktemp("semantic_run")
    proc = train_net("--config-file", SEMANTIC_TINY, "OUTPUT_DIR", out, data_root=synthetic_root)
    return out, proc.stdout


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """{"rsp": (config, checkpoint), "baseline": (config, checkpoint)}: an RSP-4 and the sum
    baseline (p2-p5), both tiny."""
    d = tmp_path_factory.mktemp("tiny_models")
    return {"rsp": make_tiny(d, "rsp4_tiny", "configs/cityscapes/rsp4_R50.yaml"),
            "baseline": make_tiny(d, "baseline_tiny", "configs/cityscapes/baseline_R50.yaml")}


@pytest.fixture(scope="session")
def val_images(synthetic_root):
    images = sorted(glob.glob(str(synthetic_root / "cityscapes/leftImg8bit/val/*/*.png")))
    assert len(images) >= 2
    return images


@pytest.fixture
def unreadable_image(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"this is not a png")
    return str(path)


def pytest_configure(config):
    # Runs a subprocess or trains a model; CI runs these too (the default selection has them).
    config.addinivalue_line("markers", "slow: tens of seconds of CPU (deselect: -m 'not slow')")
