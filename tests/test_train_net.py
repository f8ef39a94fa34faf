"""train_net.py end to end on the synthetic datasets: both tasks through the real evaluators,
eval-only, two processes and two "machines" on CPU, failures.

Each run is a subprocess (see tests/support/train_net.py) of a tiny model for a few iterations.
"""
import json
import math
import re
import shutil
import subprocess

import pytest
import torch

from support.tools import env_for
from support.train_net import (
    PANOPTIC_TINY,
    REPO,
    SEMANTIC_TINY,
    TIMEOUT_S,
    command,
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
           "PairedCOCOPanopticEvaluator, SemSegEvaluator, COCOEvaluator" in proc.stdout


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
def test_corrupt_image_is_named(semantic_run, synthetic_root, tmp_path):
    shutil.copytree(synthetic_root / "cityscapes", tmp_path / "cityscapes")
    bad = sorted((tmp_path / "cityscapes" / "leftImg8bit" / "val").glob("*/*.png"))[3]
    bad.write_bytes(bad.read_bytes()[:2000])  # truncated
    proc = train_net("--config-file", SEMANTIC_TINY, "--eval-only", "MODEL.WEIGHTS",
                     semantic_run[0] / "model_final.pth", "OUTPUT_DIR", tmp_path / "out",
                     data_root=tmp_path, expect_ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout
    assert f"error: cannot read image file {bad}" in proc.stdout
