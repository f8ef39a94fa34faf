"""rsp_d2 installed from its wheel (not a checkout): the configs ship inside the package
(rsp_d2.model_zoo), and the tools and the README's config paths work from another folder."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from rsp_d2.model_zoo import get_config_file
from rsp_d2.utils.errors import InputError
from support.tools import REPO

_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", "output", "datasets", ".d2", "*.so",
                                     "__pycache__", ".pytest_cache", "*.egg-info", "build",
                                     "dist", "configs")  # the link setup.py makes, in model_zoo


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A --target folder holding rsp_d2 as `pip install .` installs it (no C++ extension: not
    what this tests, and it compiles for minutes)."""
    root = tmp_path_factory.mktemp("wheel")
    source, target = root / "source", root / "site"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE, symlinks=True)
    shutil.copytree(os.path.join(REPO, "configs"), source / "configs")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--target", str(target), str(source)],
                          env=dict(os.environ, RSP_D2_NO_EXT="1"), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def _configs(root):
    """The config files (.yaml, LazyConfig .py) under `root`, relative to it."""
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root)
                  for f in files if f.endswith((".yaml", ".py")))


def _run(installed, cwd, *args):
    env = dict(os.environ, PYTHONPATH=str(installed))
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_wheel_ships_the_configs_and_tools_work_elsewhere(installed, tmp_path):
    shipped = installed / "rsp_d2" / "model_zoo" / "configs"
    assert _configs(shipped) == _configs(os.path.join(REPO, "configs"))

    where = _run(installed, tmp_path, "-c", "import rsp_d2, rsp_d2.model_zoo as z; "
                 "print(rsp_d2.__file__); print(z.get_config_file('cityscapes/rsp4_R50.yaml'))")
    assert where.returncode == 0, where.stderr[-3000:]
    package, config = where.stdout.split()
    assert package.startswith(str(installed)) and config.startswith(str(shipped))

    # a README command, from a folder without configs/: the shipped config is used
    flops = _run(installed, tmp_path, os.path.join(REPO, "tools", "analyze_head.py"),
                 "--config-file", "configs/synthetic/rsp4_R18.yaml", "--input-size", 256, 512)
    assert flops.returncode == 0, flops.stderr[-3000:]
    # a preset: every variant's config found in the package
    cmp = _run(installed, tmp_path, os.path.join(REPO, "tools", "compare_heads.py"), "--preset",
               "mini", "--seeds", 0, "--output", "cmp", "--collect-only")
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    with open(tmp_path / "cmp" / "comparison.json") as f:
        report = json.load(f)
    assert report["variants"]["rsp4"]["config_file"] == "configs/synthetic/rsp4_R18.yaml"


def test_get_config_file():
    assert get_config_file("cityscapes/rsp4_R50.yaml") == \
        get_config_file("configs/cityscapes/rsp4_R50.yaml")
    assert os.path.isfile(get_config_file("synthetic/rsp4_R18.yaml"))
    with pytest.raises(InputError, match="rsp_d2 ships no config 'cityscapes/nope.yaml'"):
        get_config_file("cityscapes/nope.yaml")
