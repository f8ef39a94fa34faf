"""train_net.py end to end on the synthetic datasets: both tasks through the real evaluators,
resume after a kill, eval-only, two processes and two "machines" on CPU, failures.

Each run is a subprocess (see train_net_utils) of a tiny model for a few iterations.
"""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import torch

from train_net_utils import (
    PANOPTIC_TINY,
    REPO,
    SEMANTIC_TINY,
    TIMEOUT_S,
    command,
    env_for,
    free_port,
    metrics,
    results,
    same_numbers,
    train_net,
)

CITYSCAPES_CLASSES = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                      "truck", "bus", "train", "motorcycle", "bicycle"]


def _nanmean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values)


def _check_semantic_results(res):
    official, d2 = res["cityscapes_sem_seg"], res["sem_seg"]
    for key in ("IoU", "iIoU", "IoU_sup", "iIoU_sup"):
        assert 0.0 <= official[key] <= 100.0, (key, official[key])
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert 0.0 <= d2[key] <= 100.0, (key, d2[key])
    assert d2["pACC"] > 0.0
    for name in CITYSCAPES_CLASSES:
        assert f"IoU-{name}" in official and f"IoU-{name}" in d2
    # the synthetic val split has road, sky, car, ...: those are scored, absent ones are NaN
    assert not math.isnan(d2["IoU-road"]) and math.isnan(d2["IoU-truck"])
    assert official["IoU"] == pytest.approx(
        _nanmean([official[f"IoU-{n}"] for n in CITYSCAPES_CLASSES]))
    assert d2["mIoU"] == pytest.approx(_nanmean([d2[f"IoU-{n}"] for n in CITYSCAPES_CLASSES]))


@pytest.fixture(scope="module")
def semantic_run(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("semantic_run")
    proc = train_net("--config-file", SEMANTIC_TINY, "OUTPUT_DIR", out, data_root=synthetic_root)
    return out, proc.stdout


@pytest.mark.slow
def test_semantic_train_and_evaluate(semantic_run):
    out, log = semantic_run
    _check_semantic_results(results(out))
    # progress is printed every RSP_D2.LOG_PERIOD (1) iterations, losses are finite
    records = [r for r in metrics(out) if "total_loss" in r]
    assert [r["iteration"] for r in records] == list(range(6))
    assert all(math.isfinite(r["total_loss"]) for r in records)
    assert re.search(r"eta: .* iter: 5 .*total_loss", log)
    assert "copypaste: Task: cityscapes_sem_seg" in log and "copypaste: Task: sem_seg" in log
    # the semantic recipe mapper was used
    assert "RandomCrop_CategoryAreaConstraint" in log and "ColorAugSSDTransform" in log
    for name in ("model_0000002.pth", "model_final.pth"):
        assert "model" in torch.load(out / name, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_eval_only_reproduces_final_metrics(semantic_run, synthetic_root, tmp_path):
    out, _ = semantic_run
    train_net("--config-file", SEMANTIC_TINY, "--eval-only", "MODEL.WEIGHTS",
              out / "model_final.pth", "OUTPUT_DIR", tmp_path, "TEST.CONFUSION_MATRIX", "True",
              data_root=synthetic_root)
    assert same_numbers(results(tmp_path), results(out))
    # asked for, the confusion matrix comes with the same evaluation; not written by default
    assert not (out / "inference" / "confusion_matrix.json").exists()
    confusion = json.loads((tmp_path / "inference" / "confusion_matrix.json").read_text())
    assert len(confusion["class_names"]) == 19 and len(confusion["counts"]) == 19
    assert sum(map(sum, confusion["counts"])) > 0
    assert (tmp_path / "inference" / "confusion_matrix.png").stat().st_size > 0


@pytest.mark.slow
def test_panoptic_train_and_evaluate(synthetic_root, tmp_path):
    proc = train_net("--config-file", PANOPTIC_TINY, "OUTPUT_DIR", tmp_path,
                     data_root=synthetic_root)
    res = results(tmp_path)
    assert set(res) == {"panoptic_seg", "sem_seg", "bbox", "segm"}
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert 0.0 <= res["panoptic_seg"][key] <= 100.0, key
    # the stuff classes of the semantic branch, "things" merged into one
    assert 0.0 < res["sem_seg"]["mIoU"] <= 100.0
    assert "IoU-things" in res["sem_seg"] and "IoU-road" in res["sem_seg"]
    for task in ("bbox", "segm"):  # NaN when a 4-iteration model detects nothing
        assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(res[task])
        assert all(math.isnan(v) or 0.0 <= v <= 100.0 for v in res[task].values())
    assert "Evaluating coco_2017_val_panoptic_separated (coco_panoptic_seg) with " \
           "COCOPanopticEvaluator, SemSegEvaluator, COCOEvaluator" in proc.stdout


def _expected_lrs(config_file, opts):
    """lr of every iteration of an uninterrupted run: Detectron2's scheduler, stepped."""
    from types import SimpleNamespace

    from detectron2.solver import build_lr_scheduler

    from rsp_d2.engine import load_cfg

    cfg = load_cfg(SimpleNamespace(config_file=str(REPO / config_file), opts=opts))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(cfg.SOLVER.MAX_ITER):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.slow
def test_resume_after_kill(synthetic_root, tmp_path):
    # warmup and two steps so that a schedule restarted from 0 would show
    opts = ["SOLVER.MAX_ITER", "16", "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.WARMUP_ITERS", "4",
            "SOLVER.STEPS", "(8, 12)", "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path)]
    args = ["--config-file", SEMANTIC_TINY, *opts]

    # SIGKILL right after the first checkpoint: no chance to clean up
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(command(*args), cwd=REPO, env=env_for(synthetic_root),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not (tmp_path / "last_checkpoint").exists():
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-5000:]
                assert time.monotonic() < deadline, "no checkpoint written"
                time.sleep(0.05)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    last = (tmp_path / "last_checkpoint").read_text()
    resumed_from = int(re.fullmatch(r"model_(\d{7})\.pth", last).group(1))
    assert resumed_from < 15, "the run finished before it was killed"
    for ckpt in tmp_path.glob("*.pth"):  # every checkpoint on disk is complete
        torch.load(ckpt, map_location="cpu", weights_only=True)

    killed_records = metrics(tmp_path)
    proc = train_net("--config-file", SEMANTIC_TINY, "--resume", *opts, data_root=synthetic_root)
    assert f"Starting training from iteration {resumed_from + 1}" in proc.stdout
    loaded = re.findall(r"Loading (\w+) from (\S+)", proc.stdout)
    assert ("trainer", str(tmp_path / last)) in loaded  # iteration, optimizer, lr scheduler
    assert "Loading scheduler from state_dict" in proc.stdout

    resumed_records = metrics(tmp_path)[len(killed_records):]
    assert [r["iteration"] for r in resumed_records] == list(range(resumed_from + 1, 16))
    # the lr of every iteration, before the kill and after, is the uninterrupted schedule's
    expected = _expected_lrs(SEMANTIC_TINY, opts)
    for r in killed_records + resumed_records:
        assert r["lr"] == pytest.approx(expected[r["iteration"]], rel=1e-9), r["iteration"]
    assert (tmp_path / "model_final.pth").exists()


@pytest.mark.slow
def test_two_processes_on_cpu(synthetic_root, tmp_path):
    train_net("--config-file", SEMANTIC_TINY, "--num-gpus", 2, "--dist-url",
              f"tcp://127.0.0.1:{free_port()}", "SOLVER.MAX_ITER", 3, "OUTPUT_DIR", tmp_path,
              data_root=synthetic_root, threads=1)
    _check_semantic_results(results(tmp_path))
    assert "World size: 2" in (tmp_path / "log.txt").read_text()
    assert [r["iteration"] for r in metrics(tmp_path) if "total_loss" in r] == [0, 1, 2]


@pytest.mark.slow
def test_two_machines_on_loopback(synthetic_root, tmp_path):
    url = f"tcp://127.0.0.1:{free_port()}"
    procs = [subprocess.Popen(
        command("--config-file", SEMANTIC_TINY, "--num-machines", 2, "--machine-rank", rank,
                "--dist-url", url, "SOLVER.MAX_ITER", 3, "OUTPUT_DIR", tmp_path),
        cwd=REPO, env=env_for(synthetic_root, threads=1), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    try:
        logs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-8000:]
    # Detectron2's own Cityscapes evaluator refuses multi-machine runs; ours gathers
    _check_semantic_results(results(tmp_path))
    # rank 1 logs to its own file only
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "log.txt.rank1").read_text()


@pytest.mark.slow
def test_missing_dataset_root_fails_once_and_clearly(tmp_path):
    root = tmp_path / "no_datasets_here"
    proc = train_net("--config-file", SEMANTIC_TINY, "--num-gpus", 2, "OUTPUT_DIR", tmp_path,
                     data_root=root, expect_ok=False)
    assert proc.returncode != 0
    assert proc.stdout.count("cannot find the configured datasets") == 1
    assert f"{root}/cityscapes/leftImg8bit/train does not exist" in proc.stdout
    assert f"DETECTRON2_DATASETS={root}" in proc.stdout
    assert "Traceback" not in proc.stdout  # a message, not a crash
    assert not (tmp_path / "log.txt").exists()  # failed before any worker started


@pytest.mark.slow
def test_corrupt_image_is_named(synthetic_root, tmp_path):
    shutil.copytree(synthetic_root / "cityscapes", tmp_path / "cityscapes")
    bad = sorted((tmp_path / "cityscapes" / "leftImg8bit" / "val").glob("*/*.png"))[3]
    bad.write_bytes(bad.read_bytes()[:2000])  # truncated
    proc = train_net("--config-file", SEMANTIC_TINY, "--eval-only", "MODEL.WEIGHTS", "",
                     "OUTPUT_DIR", tmp_path / "out", data_root=tmp_path, expect_ok=False)
    assert proc.returncode != 0
    assert f"cannot read image file {bad}" in proc.stdout
