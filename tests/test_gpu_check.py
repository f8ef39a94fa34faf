"""tools/gpu_check.sh where no GPU is visible: it refuses with one error line (exit 2) before
running anything; on a CUDA machine it is run by hand (it writes its report to a folder)."""
import os
import subprocess
import sys

import pytest
import torch

from support.train_net import REPO

SCRIPT = os.path.join(REPO, "tools", "gpu_check.sh")


def _run(*args):
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", SCRIPT, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_usage_error():
    proc = _run()
    assert proc.returncode == 2 and proc.stderr.startswith("error: expected one argument")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would run")
def test_no_gpu_is_a_clear_error(tmp_path):
    proc = _run(str(tmp_path / "report"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no CUDA device visible") and "Traceback" not in proc.stderr
    assert not (tmp_path / "report" / "summary.txt").exists()
