"""Helpers of the tests that run the command-line tools on tiny models and synthetic data."""
import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .fork_server import TIMEOUT_S, run_python

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Detectron2's upstream source: tools/ is not in the wheels (CI: .ci/run's DETECTRON2_SRC)
VENDORED = Path(REPO).parent / "shared" / "vendor" / "detectron2-02b5c4e2.tar.gz"
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


def env_for(data_root, threads=None, env=None):
    """Environment of a run on the synthetic datasets in `data_root` (based on `env`, default
    this process's): CPU only (on a GPU machine the gloo/NCCL choice of Detectron2's launch
    would differ), loopback only, `threads` intra-op threads."""
    env = dict(os.environ if env is None else env, DETECTRON2_DATASETS=str(data_root),
               CUDA_VISIBLE_DEVICES="", GLOO_SOCKET_IFNAME="lo")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _starts_processes(args):
    """Whether `args` launch more than one process (Detectron2's launch)."""
    args = list(map(str, args))
    return any(a in ("--num-gpus", "--num-machines") and b != "1" for a, b in zip(args, args[1:]))


def run_script(script, *args, data_root=None, threads=None, env=None):
    """``python SCRIPT ARGS...`` in the repository root (SCRIPT absolute or relative to it), a
    process of its own with its output captured: a CompletedProcess. The one way the tests run
    a script in a fresh process; :func:`call_main` runs one in this process.

    Forked from a warm interpreter (tests/support/fork_server.py), or started fresh when it
    launches processes of its own (``--num-gpus N``). `env` defaults to this process's. With
    `data_root`, a run on those synthetic datasets (:func:`env_for`, `threads` intra-op
    threads) with stderr merged into stdout, the order Detectron2's log is read in.
    """
    script = os.path.join(REPO, str(script))
    if data_root is not None:
        env = env_for(data_root, threads, env)
    merge = data_root is not None
    if _starts_processes(args):
        return subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO,
                              env=dict(os.environ if env is None else env),
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True,
                              timeout=TIMEOUT_S)
    return run_python(script, *args, env=env, merge_output=merge)


def call_main(script, *args):
    """``python script *args`` run in this process: the script's ``main(argv)``, with its stdout
    and stderr captured, as a CompletedProcess like :func:`run_script`'s.

    For the tests of what a tool refuses: a process of its own costs imports, and the refusal
    happens in ``main``. The ``if __name__ == "__main__"`` line is covered by each tool's test
    in a process of its own (:func:`run_script`, or docs/make_figures.sh). Not for runs on the
    synthetic datasets (``DETECTRON2_DATASETS`` is read once per interpreter), nor for checking
    what a tool logs: Detectron2's ``setup_logger`` is cached, so its handler keeps the stdout
    of the first call.
    """
    module = _script_module(script)
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(REPO)  # where run_script runs, for the relative paths in args
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.main([str(a) for a in args])
    except SystemExit as e:  # argparse's refusals, and exit_with_error's
        code = e.code
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess([script, *args], code or 0, out.getvalue(), err.getvalue())


def _script_module(script):
    path = os.path.join(REPO, script)
    name = "_script_" + os.path.splitext(os.path.relpath(path, REPO))[0].replace(os.sep, "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        # as `python script` does: the script's folder first on sys.path (demo/predictor.py)
        sys.path.insert(0, os.path.dirname(path))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(os.path.dirname(path))
        sys.modules[name] = module
    return sys.modules[name]


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


def detectron2_tool(name: str, dest: Path) -> Path:
    """Detectron2's ``tools/<name>``, from its upstream source: $DETECTRON2_SRC (an archive or a
    source folder, as for ``make env``) or the archive CI vendors; extracted into `dest` from
    an archive. Skips the test when neither holds it."""
    script = f"tools/{name}"
    src = os.environ.get("DETECTRON2_SRC", "")
    for candidate in (Path(src) if src else None, VENDORED):
        if candidate is None or not candidate.exists():
            continue
        if candidate.is_dir():
            found = sorted(candidate.glob(f"**/{script}"))
            if found:
                return found[0]
            continue
        with tarfile.open(candidate) as archive:
            for member in archive:
                if member.isfile() and member.name.endswith(script):
                    target = Path(dest) / name
                    target.write_bytes(archive.extractfile(member).read())
                    return target
    pytest.skip(f"no Detectron2 source holding {script}: neither $DETECTRON2_SRC "
                f"({src or 'unset'}) nor {VENDORED}")
