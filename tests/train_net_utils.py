"""Running train_net.py in subprocesses for the tests.

Detectron2 binds its builtin dataset names to $DETECTRON2_DATASETS when ``detectron2.data`` is
first imported, so every run on the synthetic data is a process of its own with it set: forked
from a warm interpreter (tests/fork_server.py), or a fresh one for the runs that spawn
processes themselves.
"""
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import fork_server

REPO = Path(__file__).resolve().parents[1]
TRAIN_NET = str(REPO / "train_net.py")
SEMANTIC_TINY = "tests/configs/rsp4_R18_tiny.yaml"
PANOPTIC_TINY = "tests/configs/panoptic_rsp4_tiny.yaml"
TIMEOUT_S = fork_server.TIMEOUT_S


def env_for(data_root, threads=None):
    """Environment of a run on `data_root`: CPU only (on a GPU machine the gloo/NCCL choice of
    Detectron2's launch would differ), loopback only, `threads` intra-op threads."""
    env = dict(os.environ, DETECTRON2_DATASETS=str(data_root), CUDA_VISIBLE_DEVICES="",
               GLOO_SOCKET_IFNAME="lo")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def command(*args):
    return [sys.executable, TRAIN_NET, *map(str, args)]


def _starts_processes(args):
    """Whether train_net.py `args` launch more than one process (Detectron2's launch)."""
    args = list(map(str, args))
    return any(a in ("--num-gpus", "--num-machines") and b != "1" for a, b in zip(args, args[1:]))


def run_python(script, *args, data_root, threads=None):
    """``python SCRIPT ARGS...`` with the environment of `env_for(data_root, threads)`: a
    CompletedProcess, stdout and stderr merged. Forked from a warm interpreter
    (tests/fork_server.py) unless it launches processes of its own."""
    env = env_for(data_root, threads)
    if _starts_processes(args):
        return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=TIMEOUT_S)
    return fork_server.run_python(script, *args, env=env, merge_output=True)


def train_net(*args, data_root, threads=None, expect_ok=True):
    """Run ``train_net.py *args``; returns the CompletedProcess (stdout and stderr merged)."""
    proc = run_python(TRAIN_NET, *args, data_root=data_root, threads=threads)
    if expect_ok and proc.returncode != 0:
        pytest.fail(f"train_net.py {' '.join(map(str, args))} exited {proc.returncode}:\n"
                    f"{proc.stdout[-8000:]}")
    return proc


def _no_bare_nan(token):
    raise AssertionError(f"results.json holds {token}, which is not valid JSON")


def results(output_dir):
    """The evaluation results a run saved (RSPTrainer.test), parsed as strict JSON; a metric
    that is not defined (NaN in Detectron2's results: a class without ground truth) is saved
    as null and returned as NaN."""
    with open(Path(output_dir) / "inference" / "results.json") as f:
        saved = json.load(f, parse_constant=_no_bare_nan)
    return {task: {k: math.nan if v is None else v for k, v in metrics.items()}
            for task, metrics in saved.items()}


def metrics(output_dir):
    """The records of metrics.json, in the order written (runs append to it)."""
    with open(Path(output_dir) / "metrics.json") as f:
        return [json.loads(line) for line in f if line.strip()]


def same_numbers(a, b):
    """Nested dicts equal, NaN equal to NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            same_numbers(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
