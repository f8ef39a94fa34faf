"""User mistakes with train_net.py: one ``error:`` line on stderr naming the key or path, exit
status 2, no traceback, and nothing written (the checks run before any process is launched).

Most cases call train_net's entry point (rsp_d2.engine.cli) in this process, since the checks
fail before any dataset is read; the `slow` ones run train_net.py itself.
"""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from rsp_d2.engine import cli
from support.train_net import REPO, SEMANTIC_TINY, train_net

FUSON = "MODEL.SEM_SEG_HEAD.RSP.FUSON"


def _error_of(capsys, *argv):
    """The one error line of ``train_net.py *argv``, checked to exit 2 without a traceback."""
    code = cli([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (out[-3000:], err[-3000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    return lines[0]


@pytest.fixture
def out(tmp_path):
    """An OUTPUT_DIR that must not be created by a refused run."""
    path = tmp_path / "out"
    yield path
    assert not path.exists(), "a refused run wrote files"


def test_missing_config_file(capsys, out):
    assert _error_of(capsys, "--config-file", "configs/nope.yaml", "OUTPUT_DIR", out) == \
        "error: config file not found: configs/nope.yaml (expected a Detectron2 .yaml)"


def test_unknown_key_on_the_command_line(capsys, out):
    line = _error_of(capsys, "--config-file", SEMANTIC_TINY, FUSON, "[rsp]", "OUTPUT_DIR", out)
    assert line.startswith(f"error: command-line override: unknown config key {FUSON}; did you "
                           "mean MODEL.SEM_SEG_HEAD.RSP.FUSION?")


def test_unknown_key_in_a_file(capsys, tmp_path, out):
    config = tmp_path / "typo.yaml"
    config.write_text(f'_BASE_: "{REPO / SEMANTIC_TINY}"'
                      "\nSOLVER:\n  MAX_ITERS: 3\n")
    line = _error_of(capsys, "--config-file", config, "OUTPUT_DIR", out)
    assert line.startswith(f"error: config file {config} (or one of its _BASE_ files): unknown "
                           "config key SOLVER.MAX_ITERS; did you mean SOLVER.MAX_ITER?")


@pytest.mark.parametrize("opts,expected", [
    (["MODEL.SEM_SEG_HEAD.RSP.IMPL", "cudaa"],
     "error: MODEL.SEM_SEG_HEAD.RSP.IMPL 'cudaa': unknown impl 'cudaa'; registered: ['auto', "),
    (["MODEL.SEM_SEG_HEAD.RSP.KERNEL_SIZE", "4"],
     f"error: the model of {SEMANTIC_TINY} cannot be built: "),
    (["SOLVER.IMS_PER_BATCH", "3"],
     "error: SOLVER.IMS_PER_BATCH 3 is not divisible by the number of processes 2"),
    (["SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(4,)"],
     "error: SOLVER.STEPS (4,) includes SOLVER.MAX_ITER 4: a step at the last iteration changes "
     "nothing; use steps below MAX_ITER (steps beyond it are dropped)"),
    (["SOLVER.STEPS", "(5, 3)"], "error: SOLVER.STEPS (5, 3): expected increasing positive "
                                 "iterations"),
    (["MODEL.RESNETS.NORM", "FrozenBN"],
     "error: the backbone has 20 FrozenBN layers (e.g. bottom_up.stem.conv1.norm) but "
     "MODEL.WEIGHTS is empty: frozen statistics of a random initialization normalize nothing"),
])
def test_config_that_cannot_run(capsys, out, opts, expected):
    assert _error_of(capsys, "--config-file", SEMANTIC_TINY, "--num-gpus", 2, *opts,
                     "OUTPUT_DIR", out).startswith(expected)


def test_output_dir_cannot_be_created(capsys, tmp_path):
    (tmp_path / "a_file").write_text("")
    assert _error_of(capsys, "--config-file", SEMANTIC_TINY, "OUTPUT_DIR",
                     tmp_path / "a_file" / "run") == \
        f"error: OUTPUT_DIR {tmp_path}/a_file/run cannot be created: {tmp_path}/a_file is a file, " \
        "not a folder"


def test_resume_without_checkpoint(capsys, out):
    out.mkdir()
    assert _error_of(capsys, "--config-file", SEMANTIC_TINY, "--resume", "OUTPUT_DIR", out) == \
        f"error: --resume: no checkpoint to resume in OUTPUT_DIR {out} (it has no " \
        "last_checkpoint file): check OUTPUT_DIR, or drop --resume to start a new run"
    out.rmdir()


@pytest.mark.parametrize("content", [b"\x00random bytes\xff" * 10, b"not a checkpoint\n"])
def test_unreadable_checkpoint(capsys, tmp_path, out, content):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    assert _error_of(capsys, "--config-file", SEMANTIC_TINY, "--eval-only", "MODEL.WEIGHTS", bad,
                     "OUTPUT_DIR", out).startswith(f"error: cannot load checkpoint {bad}: ")


@pytest.mark.slow
def test_resume_with_another_architecture(capsys, semantic_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(semantic_run[0], run)
    before = sorted(p.name for p in run.iterdir())
    line = _error_of(capsys, "--config-file", SEMANTIC_TINY, "--resume", "OUTPUT_DIR", run,
                     "MODEL.SEM_SEG_HEAD.CONVS_DIM", 64)
    assert line == (f"error: cannot load checkpoint {run}/model_final.pth: it was saved from a "
                    "different model config: MODEL.SEM_SEG_HEAD.CONVS_DIM 32 (config: 64); use "
                    "the config (and MODEL.* overrides) it was trained with")
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.slow
def test_eval_only_refuses_another_models_checkpoint(semantic_run, synthetic_root, tmp_path):
    # a checkpoint of the sum baseline (no RSP fusions), as another tool would save it
    import torch

    weights = torch.load(semantic_run[0] / "model_final.pth", weights_only=True)["model"]
    other = {k: v for k, v in weights.items() if ".rsp." not in k and "fusions" not in k}
    assert len(other) < len(weights)
    torch.save({"model": other}, tmp_path / "other.pth")
    proc = train_net("--config-file", SEMANTIC_TINY, "--eval-only", "MODEL.WEIGHTS",
                     tmp_path / "other.pth", "OUTPUT_DIR", tmp_path / "out",
                     data_root=synthetic_root, expect_ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout, proc.stdout[-3000:]
    assert f"error: cannot load checkpoint {tmp_path}/other.pth: it does not fit the model " \
           f"built from the config ({len(weights) - len(other)} parameters of the model " \
           "missing, e.g. [" in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_label_value_out_of_range(synthetic_root, tmp_path):
    shutil.copytree(synthetic_root / "cityscapes", tmp_path / "cityscapes")
    for label in (tmp_path / "cityscapes" / "gtFine" / "train").glob("*/*_labelTrainIds.png"):
        pixels = np.array(Image.open(label))
        pixels[0, :] = 40
        Image.fromarray(pixels).save(label)
    proc = train_net("--config-file", SEMANTIC_TINY, "DATASETS.TEST", "()", "OUTPUT_DIR",
                     tmp_path / "out", data_root=tmp_path, expect_ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout, proc.stdout[-3000:]
    assert "error: label map " in proc.stdout
    assert "_labelTrainIds.png has values [40] outside [0, 19) (MODEL.SEM_SEG_HEAD.NUM_CLASSES " \
           "19) that are not the ignore label (MODEL.SEM_SEG_HEAD.IGNORE_VALUE 255)" in proc.stdout


def _break_cityscapes(root, fault):
    """Break the Cityscapes copy under `root`; the error line train_net.py must print."""
    cityscapes = root / "cityscapes"
    if fault == "val-labelIds-missing":
        # not in the first city Detectron2's loader lists: it asserts on that one's files itself
        first_city = os.listdir(cityscapes / "leftImg8bit" / "val")[0]
        label = sorted(p for p in cityscapes.glob("gtFine/val/*/*_labelIds.png")
                       if p.parent.name != first_city)[0]
        label.unlink()
        return ("error: dataset 'cityscapes_fine_sem_seg_val' (DATASETS.TEST): 1 of 8 labelIds "
                f"files of the official Cityscapes evaluation do not exist (e.g. {label}): "
                "restore them from Cityscapes' gtFine_trainvaltest.zip")
    assert fault == "train-empty", fault
    for city in (cityscapes / "leftImg8bit" / "train").iterdir():
        shutil.rmtree(city)
    return ("error: dataset 'cityscapes_fine_sem_seg_train' (DATASETS.TRAIN): the split is "
            f"empty: image_dir {cityscapes}/leftImg8bit/train holds no files; put its images "
            "there, or remove 'cityscapes_fine_sem_seg_train' from DATASETS.TRAIN")


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["val-labelIds-missing", "train-empty"])
def test_incomplete_dataset_is_refused_before_training(synthetic_root, tmp_path, fault):
    """Found by the launcher on the builtin datasets, before anything is written. Before, a
    missing val labelIds was skipped by the official evaluation (exit 0, the mIoU of the other
    images), an empty split failed with an AssertionError traceback after config.yaml and
    log.txt were written (the val split: after the whole training)."""
    shutil.copytree(synthetic_root / "cityscapes", tmp_path / "cityscapes")
    expected = _break_cityscapes(tmp_path, fault)
    proc = train_net("--config-file", SEMANTIC_TINY, "OUTPUT_DIR", tmp_path / "out",
                     data_root=tmp_path, expect_ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout, proc.stdout[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == expected
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_diverging_loss_is_named(synthetic_root, tmp_path):
    proc = train_net("--config-file", SEMANTIC_TINY, "SOLVER.BASE_LR", "1e12", "DATASETS.TEST",
                     "()", "OUTPUT_DIR", tmp_path, data_root=synthetic_root, expect_ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout, proc.stdout[-3000:]
    assert "error: training diverged at iteration " in proc.stdout
    assert "loss term(s) loss_sem_seg became NaN/Inf. Likely causes: a learning rate too high " \
           "for the batch (SOLVER.BASE_LR 1000000000000.0: lower it" in proc.stdout


def test_tools_refuse_another_models_checkpoint(tiny):
    """The demo and the tools load through load_model: the sum baseline's weights in RSP-4."""
    from rsp_d2.config import load_config
    from rsp_d2.engine import load_model
    from rsp_d2.utils.errors import InputError

    cfg = load_config(tiny["rsp"][0], weights=tiny["baseline"][1])
    with pytest.raises(InputError, match=f"cannot load checkpoint {tiny['baseline'][1]}: it does "
                                         r"not fit the model built from the config \(\d+ "
                                         "parameters of the model missing"):
        load_model(cfg)
