"""A run stopped from outside (Ctrl-C, SIGTERM, a full disk) or started twice into one folder:
one ``error:`` line saying where it was and how to continue, the shell's exit status, no
traceback, and no result of an unfinished model (rsp_d2/engine/interrupt.py, run_lock.py, the
trainer's final evaluation); ``--resume`` then completes it as if it had never stopped.
"""
import os
import signal
import subprocess
import sys

import pytest

from rsp_d2.analysis.compare import is_finished
from rsp_d2.engine.run_lock import output_dir_lock
from support.tools import run_script
from support.train_net import REPO, SEMANTIC_TINY, results, same_numbers, train_net

KILL_AT = str(REPO / "tests" / "support" / "kill_at.py")


def _one_error_line(output):
    assert "Traceback" not in output, output[-4000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and output.strip().splitlines()[-1] == errors[0], output[-4000:]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("sig,moment,arg,status,where", [
    # the last iteration: Detectron2 would still run the final evaluation
    ("SIGINT", "iteration", "5", 130, "SIGINT (Ctrl-C) at iteration 5"),
    # the final checkpoint's write: the evaluation would score a model never saved
    ("SIGTERM", "write", "model_final.pth", 143, "SIGTERM at iteration 5"),
])
def test_stopped_run_leaves_no_result_and_resumes(semantic_run, synthetic_root, tmp_path, sig,
                                                  moment, arg, status, where):
    out = tmp_path / "run"
    proc = run_script(KILL_AT, moment, arg, sig, "--", "--config-file", SEMANTIC_TINY,
                      "OUTPUT_DIR", out, data_root=synthetic_root)
    assert proc.returncode == status, proc.stdout[-4000:]
    resume = f"{out}/model_0000002.pth" if moment == "iteration" else f"{out}/model_0000005.pth"
    assert _one_error_line(proc.stdout) == (
        f"error: stopped by {where}; no result was written. The last checkpoint is {resume}: "
        f"continue with python train_net.py --config-file {SEMANTIC_TINY} --resume OUTPUT_DIR "
        f"{out}")
    assert not (out / "inference").exists() and not (out / "model_final.pth").exists()
    assert not is_finished(str(out))  # tools/compare_heads.py resumes it, never counts it

    train_net("--config-file", SEMANTIC_TINY, "--resume", "OUTPUT_DIR", out,
              data_root=synthetic_root)
    assert is_finished(str(out))
    assert same_numbers(results(out), results(semantic_run[0]))


@pytest.mark.slow
def test_full_disk_is_one_line_and_resumable(synthetic_root, tmp_path):
    disk = tmp_path / "small_disk"
    disk.mkdir()
    # a 4 MiB file system: the logs fit, the first checkpoint (90 MB) does not
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        proc = train_net("--config-file", SEMANTIC_TINY, "OUTPUT_DIR", disk / "run",
                         data_root=synthetic_root, expect_ok=False)
        assert proc.returncode == 2, proc.stdout[-4000:]
        line = _one_error_line(proc.stdout)
        assert line == (f"error: no space left on device (OUTPUT_DIR {disk}/run): free some "
                        "space. No checkpoint was written: start the run again")
        left = sorted(p.name for p in (disk / "run").iterdir())
        assert not any(name.endswith(".pth") or ".tmp-" in name for name in left), left
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.slow
def test_second_run_into_a_folder_in_use_is_refused(synthetic_root, tmp_path):
    out = tmp_path / "run"
    with output_dir_lock(str(out)):  # as a first run holds it
        proc = train_net("--config-file", SEMANTIC_TINY, "OUTPUT_DIR", out,
                         data_root=synthetic_root, expect_ok=False)
    assert proc.returncode == 2
    assert _one_error_line(proc.stdout) == (
        f"error: OUTPUT_DIR {out} is in use by another run (pid {os.getpid()}): wait for it to "
        "finish, or choose another OUTPUT_DIR")
    assert sorted(p.name for p in out.iterdir()) == [".run.lock"]  # nothing of the second run


def test_a_killed_run_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.run(
        [sys.executable, "-c", "import os, signal, sys\nfrom rsp_d2.engine.run_lock import "
         "output_dir_lock\nwith output_dir_lock(sys.argv[1]):\n"
         "    os.kill(os.getpid(), signal.SIGKILL)", str(out)], cwd=REPO)
    assert holder.returncode == -signal.SIGKILL and (out / ".run.lock").exists()
    with output_dir_lock(str(out)):
        pass
