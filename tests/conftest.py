"""Shared pytest fixtures."""

import pytest


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


def pytest_configure(config):
    # Runs a subprocess or trains a model; CI runs these too (the default selection has them).
    config.addinivalue_line("markers", "slow: tens of seconds of CPU (deselect: -m 'not slow')")
