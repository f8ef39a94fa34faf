"""rsp_d2's import prints nothing (known third-party import-time warnings are silenced, see
rsp_d2/_import_warnings.py) and leaves the warning filters as it found them."""
import subprocess
import sys

import pytest

from support.train_net import REPO


def _run(code):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # no PYTHONWARNINGS: the defaults
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_import_is_quiet_and_filters_are_restored():
    proc = _run("import warnings; before = list(warnings.filters); import rsp_d2, rsp_d2.engine, "
                "rsp_d2.evaluation; assert warnings.filters == before, 'filters changed'; "
                "print('imported')")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "imported\n"
    assert proc.stderr == ""
