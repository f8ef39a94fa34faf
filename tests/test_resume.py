"""Kill-and-resume: a run SIGKILLed at three moments and resumed each time ends bit-identical (weights,
on CPU) to the uninterrupted run of the same config and seed (the shared `semantic_run`: 6
iterations, checkpoints after iterations 2 and 5).

tests/support/kill_at.py makes each kill land at an exact moment; each resume must also clean the
killed write's temporary file and drop the metrics.json records it writes again.
"""
import re

import pytest
import torch

from support.tools import run_script
from support.train_net import REPO, SEMANTIC_TINY, metrics, results, same_numbers, \
    train_net

KILL_AT = str(REPO / "tests" / "support" / "kill_at.py")


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _killed(moment, arg, opts, data_root):
    """The output of train_net.py with `opts` until tests/support/kill_at.py kills it at `moment`."""
    proc = run_script(KILL_AT, moment, arg, "--", "--config-file", SEMANTIC_TINY, *opts,
                      data_root=data_root)
    assert proc.returncode == -9, proc.stdout[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_kill_and_resume_is_exact(semantic_run, synthetic_root, tmp_path):
    reference, _ = semantic_run
    opts = ["OUTPUT_DIR", str(tmp_path)]
    # one run killed three times, each time resumed until the next kill:
    _killed("iteration", "4", opts, synthetic_root)  # mid-iteration, after checkpoint 2
    for moment, arg, resumed_from in [("write", "model_0000005.pth", 2),  # a checkpoint write
                                      ("write", "model_final.pth", 2),    # the final write
                                      (None, None, 5)]:                   # to the end
        stale = list(tmp_path.glob(".*.tmp-*"))
        assert (tmp_path / "last_checkpoint").read_text() == f"model_{resumed_from:07d}.pth"
        assert not (tmp_path / "model_final.pth").exists()
        args = ["--resume", *opts]
        if moment is None:
            log = train_net("--config-file", SEMANTIC_TINY, *args, data_root=synthetic_root).stdout
        else:
            log = _killed(moment, arg, args, synthetic_root)
        assert f"Starting training from iteration {resumed_from + 1}" in log
        assert all(f"Removed {path}, left by a killed write" in log and not path.exists()
                   for path in stale)
    assert len(stale) == 1  # the killed final write's
    assert re.search(r"Saving checkpoint to \S+model_final\.pth", log)

    final, expected = _weights(tmp_path / "model_final.pth"), _weights(reference / "model_final.pth")
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert same_numbers(results(tmp_path), results(reference))
    # one record per iteration: the killed runs' records past their checkpoint were dropped
    records = [r for r in metrics(tmp_path) if "total_loss" in r]
    assert [r["iteration"] for r in records] == list(range(6))
    reference_lrs = {r["iteration"]: r["lr"] for r in metrics(reference) if "lr" in r}
    assert all(r["lr"] == reference_lrs[r["iteration"]] for r in records)
