"""``python -m rsp_d2.collect_env`` (the README's bug-report command) on this stack."""
import re
import subprocess
import sys

import pytest
import torch

from rsp_d2.layers import available_rse_impls, rse_impl_names, rse_impls
from rsp_d2.layers.rse_cpp import HAS_CPP_EXT
from support.train_net import REPO


def _collect_env(*args):
    proc = subprocess.run([sys.executable, "-m", "rsp_d2.collect_env", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_report_has_detectron2s_table_and_rsp_d2s():
    out = _collect_env()
    # Detectron2's collect_env table first
    assert re.search(r"^detectron2\s+\S+", out, re.M) and "PyTorch built with" in out
    assert re.search(rf"^PyTorch\s+{re.escape(torch.__version__)}", out, re.M)
    rsp = out[out.index("\nrsp_d2 "):]
    assert re.search(r"^rsp_d2\s+0\.\d+\.\d+ @ ", rsp, re.M)
    if HAS_CPP_EXT:
        assert "(matches the source: ok)" in rsp
        assert re.search(r"^rsp_d2\._C loops\s+(avx512|avx2|baseline) \(", rsp, re.M)
        assert re.search(r"^rsp_d2\._C threads\s+(torch's OpenMP pool|threads of its own)$", rsp,
                         re.M)
        assert re.search(r"^rsp_d2\._C map dtypes\s+float32, float64, bfloat16 \(", rsp, re.M)
    else:
        assert re.search(r"^rsp_d2\._C\s+unavailable: ", rsp, re.M)
    assert ", ".join(rse_impl_names()) + "  ('auto' order)" in rsp
    for dtype in (torch.float32, torch.bfloat16):
        names = available_rse_impls(torch.empty(1, 1, 1, 1, dtype=dtype))
        assert f"available, cpu {str(dtype)[6:]}" in rsp
        assert re.search(rf"available, cpu {str(dtype)[6:]}\s+{re.escape(', '.join(names))}$",
                         rsp, re.M)
    # a self-test row per available implementation and dtype (the reference is the yardstick)
    tests = re.findall(r"^  self-test (\S+)\s+max rel\. error (\S+) \(tol (\S+)\), fwd\+bwd "
                       r"(\S+) ms, (.*)$", rsp, re.M)
    cpu_impls = [n for n in available_rse_impls(torch.empty(1, 1, 1, 1)) if n != "reference"]
    assert [t[0] for t in tests[:len(cpu_impls)]] == cpu_impls
    for name, err, tol, ms, verdict in tests:
        assert verdict == "ok" and float(err) <= float(tol) and float(ms) > 0, name


def test_no_self_test_flag(capsys):
    from rsp_d2.collect_env import main  # the entry point: the test above

    assert main(["--no-self-test"]) == 0
    out = capsys.readouterr().out
    assert "relation implementations" in out and "self-test" not in out
    # read from the registry, with the reason for each implementation that does not run here
    for name, why in ((i.name, i.why_not(torch.empty(1, 1, 1, 1))) for i in rse_impls()):
        assert (f"{name}: {why}" in out) == bool(why), name
