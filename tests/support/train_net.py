"""train_net.py's runs for the tests, and what they leave: results, metrics.

Detectron2 binds its builtin dataset names to $DETECTRON2_DATASETS when ``detectron2.data`` is
first imported, so every run on the synthetic data is a process of its own with it set
(:func:`support.tools.run_script` with ``data_root``).
"""
import json
import math
import socket
import sys
from pathlib import Path

import pytest

from . import fork_server
from .tools import run_script

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = str(REPO / "train_net.py")
SEMANTIC_TINY = "tests/configs/rsp4_R18_tiny.yaml"
PANOPTIC_TINY = "tests/configs/panoptic_rsp4_tiny.yaml"
TIMEOUT_S = fork_server.TIMEOUT_S


def command(*args):
    """``python train_net.py ARGS...`` as an argv, for a process the test starts itself."""
    return [sys.executable, TRAIN_NET, *map(str, args)]


def train_net(*args, data_root, threads=None, expect_ok=True):
    """Run ``train_net.py *args``; returns the CompletedProcess (stdout and stderr merged)."""
    proc = run_script(TRAIN_NET, *args, data_root=data_root, threads=threads)
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
