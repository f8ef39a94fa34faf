"""Shared pytest fixtures, and the settings of a run under pytest-xdist (``make test``)."""
import glob
import os
from pathlib import Path

import pytest

def _cores():
    """The cores this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Under xdist the workers share the cores: one intra-op thread pool per core, not per worker
# (oversubscribed OpenMP pools spin against each other). Set before torch is first imported,
# so that the subprocesses the tests start inherit it too.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(
        max(1, _cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

from support.run_once import run_once  # noqa: E402
from support.tools import make_tiny  # noqa: E402


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A ``pathlib.Path`` holding ``cityscapes/`` and ``coco/`` synthetic datasets, generated
    once per test session (seed 0, default sizes: Cityscapes 24 train / 8 val, COCO 16 / 8).

    Use it as ``DETECTRON2_DATASETS``. Detectron2 binds its builtin dataset names to that
    variable when ``detectron2.data`` is first imported (``import rsp_d2`` does so), so load them
    in a subprocess whose environment sets it.
    """
    from rsp_d2.data.synthetic import generate_datasets

    def build(root):
        generate_datasets(root, seed=0)
        return str(root)

    return Path(run_once(tmp_path_factory, "synthetic_datasets", build))


@pytest.fixture(scope="session")
def semantic_run(synthetic_root, tmp_path_factory):
    """(OUTPUT_DIR, log) of one uninterrupted train_net.py run of the tiny semantic config
    (6 iterations, checkpoints after iterations 2 and 5, evaluated), shared by the tests."""
    from support.train_net import SEMANTIC_TINY, train_net

    def build(out):
        proc = train_net("--config-file", SEMANTIC_TINY, "OUTPUT_DIR", out, data_root=synthetic_root)
        return str(out), proc.stdout

    out, log = run_once(tmp_path_factory, "semantic_run", build)
    return Path(out), log


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """{"rsp": (config, checkpoint), "baseline": (config, checkpoint)}: an RSP-4 and the sum
    baseline (p2-p5), both tiny."""
    def build(d):
        return {"rsp": make_tiny(d, "rsp4_tiny", "configs/cityscapes/rsp4_R50.yaml"),
                "baseline": make_tiny(d, "baseline_tiny", "configs/cityscapes/baseline_R50.yaml")}

    return {k: tuple(v) for k, v in run_once(tmp_path_factory, "tiny_models", build).items()}


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


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    # `-n auto`: one worker per core, at most 4 (each worker imports torch and Detectron2 and
    # may build full-size models; beyond a few workers the suite is bound by its longest tests)
    return max(1, min(4, _cores()))


def pytest_configure(config):
    # Runs a subprocess or trains a model; CI runs these too (the default selection has them).
    config.addinivalue_line("markers", "slow: tens of seconds of CPU (deselect: -m 'not slow')")
