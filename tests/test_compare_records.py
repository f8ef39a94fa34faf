"""A comparison kept in git (docs/runs/): each run's record without its weights counts as
finished, and tools/compare_heads.py refuses to add runs made on another CPU type or from
other starting weights to it (the pairing rule of docs/comparison_pilot.md)."""
import hashlib
import shutil
import subprocess

import pytest

from rsp_d2.analysis.compare import (Variant, check_same_identity, is_finished, plan, run_dir,
                                     run_identity, run_one)
from rsp_d2.analysis.compare_report import collect
from rsp_d2.utils.errors import InputError
from rsp_d2.utils.machine import cpu_model
from support.compare_runs import finished_run
from support.tools import call_main
from support.train_net import REPO, SEMANTIC_TINY

SUM = ["MODEL.SEM_SEG_HEAD.RSP.FUSION", "['sum','sum','sum','sum','sum']"]


def _variants(weights=None):
    start = ["MODEL.WEIGHTS", str(weights)] if weights else []
    return [Variant("rsp4", SEMANTIC_TINY, list(start)),
            Variant("sum", SEMANTIC_TINY, SUM + start)]


def test_a_record_without_weights_is_finished_and_reported(tmp_path):
    rsp4, base = _variants()
    finished_run(tmp_path, base, 0, 50.0, weights=False)
    finished_run(tmp_path, rsp4, 0, 52.5, weights=False)
    report = collect([rsp4, base], [0], str(tmp_path), contrasts=[("rsp4", "sum")])
    assert report["missing"] == []
    assert report["contrasts"][0]["mean"] == pytest.approx(2.5)
    # results alone (no run_info.json, no weights): an interrupted or hand-made folder
    (tmp_path / "sum" / "seed0" / "run_info.json").unlink()
    assert not is_finished(run_dir(str(tmp_path), base, 0))


@pytest.mark.parametrize("weights", [True, False])
def test_a_finished_run_keeps_no_periodic_checkpoint(tmp_path, weights):
    """What a comparison killed before its cleanup left: the next call skips the run and
    deletes its periodic checkpoints, nothing else (a record without weights stays one)."""
    rsp4, _ = _variants()
    out = finished_run(tmp_path, rsp4, 0, 50.0, weights=weights)
    for name in ("model_0000199.pth", "model_0000399.pth", "last_checkpoint", "model_best.pth"):
        (out / name).write_bytes(b"")
    kept = sorted(p.name for p in out.iterdir() if not p.name.startswith("model_0"))
    run_one(rsp4, 0, str(out), relation_images=0, log=lambda *a, **k: None)
    assert sorted(p.name for p in out.iterdir()) == kept
    assert is_finished(str(out))


def test_runs_of_another_cpu_are_not_continued(tmp_path):
    rsp4, base = _variants()
    finished_run(tmp_path, rsp4, 0, 50.0, cpu="Another CPU", weights=False)
    finished_run(tmp_path, base, 0, 50.0, cpu="Another CPU", weights=False)
    check_same_identity(plan([rsp4, base], [0]), str(tmp_path))  # nothing to train: fine
    with pytest.raises(InputError, match=r"rsp4/seed0/run_info.json: its run was made with cpu "
                                         r"'Another CPU', a new run here would have"):
        check_same_identity(plan([rsp4, base], [0, 1]), str(tmp_path))
    # the tool says so in one line, before training anything
    proc = call_main("tools/compare_heads.py", "--variant", "rsp4", SEMANTIC_TINY, "--variant",
                     "sum", SEMANTIC_TINY, *SUM, "--seeds", 0, 1, "--output", tmp_path,
                     "--relation-images", 0)
    assert proc.returncode != 0 and "[run]" not in proc.stdout
    assert proc.stderr.strip().startswith("error:") and "start another --output" in proc.stderr
    assert not (tmp_path / "rsp4" / "seed1").exists()


def test_runs_from_other_starting_weights_are_not_continued(tmp_path):
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(b"pretrained once")
    rsp4, base = _variants(weights)
    identity = run_identity(rsp4)
    assert identity == {"cpu": cpu_model(),
                        "weights_sha256": hashlib.sha256(b"pretrained once").hexdigest()}
    root = tmp_path / "cmp"
    for variant in (rsp4, base):
        finished_run(root, variant, 0, 50.0, weights=False, **identity)
    check_same_identity(plan([rsp4, base], [0, 1]), str(root))  # same CPU, same weights
    weights.write_bytes(b"pretrained again, other floats")
    with pytest.raises(InputError, match="made with weights_sha256"):
        check_same_identity(plan([rsp4, base], [0, 1]), str(root))


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs git and a checkout (docs/runs/.gitignore decides what is kept)")
@pytest.mark.parametrize("path,kept", [
    ("inference/results.json", True), ("run_info.json", True), ("relation_content.json", True),
    ("model_final.pth", False), ("model_0000199.pth", False), ("last_checkpoint", False),
    ("log.txt", False), ("inference/sem_seg_predictions.json", False)])
def test_docs_runs_keeps_the_records_only(path, kept):
    name = f"docs/runs/mini/rsp4/seed0/{path}"
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=REPO)
    assert (ignored.returncode == 1) == kept, name


def test_collect_only_reports_runs_without_their_starting_weights(tmp_path):
    """Reading a comparison kept in git needs no pretrained backbone (the records are enough);
    training more of it does, and says how to make it."""
    rsp4, _ = _variants(tmp_path / "not_made.pth")
    finished_run(tmp_path / "cmp", rsp4, 0, 50.0, weights=False)
    args = ["--variant", "rsp4", SEMANTIC_TINY, "MODEL.WEIGHTS", tmp_path / "not_made.pth",
            "--output", tmp_path / "cmp", "--relation-images", 0, "--seeds", 0]
    report = call_main("tools/compare_heads.py", *args, "--collect-only")
    assert report.returncode == 0, report.stderr[-2000:]
    train = call_main("tools/compare_heads.py", *args, 1)
    assert train.returncode == 2 and "not_made.pth does not exist" in train.stderr


def test_runs_of_other_settings_or_older_records_are_not_continued(tmp_path):
    """A record whose overrides differ (a from-scratch run under a pretrained preset's name),
    one made before the starting weights' SHA-256 was recorded, or one trained with other
    intra-op threads is not paired with new runs."""
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(b"pretrained once")
    rsp4, base = _variants(weights)
    identity = run_identity(rsp4)
    cases = {
        "opts": dict(identity, opts=["MODEL.SEM_SEG_HEAD.RSP.FUSION", "['rsp']"]),
        "weights_sha256": {"cpu": identity["cpu"], "opts": list(rsp4.opts)},  # older record
        "threads": dict(identity, opts=list(rsp4.opts), threads=97),
    }
    for key, info in cases.items():
        root = tmp_path / key
        finished_run(root, rsp4, 0, 50.0, weights=False, **info)
        with pytest.raises(InputError, match=f"made with {key} "):
            check_same_identity(plan([rsp4], [0, 1]), str(root), threads=1)
    # the same settings on another machine's paths: continued
    root = tmp_path / "same"
    moved = ["MODEL.WEIGHTS", "/elsewhere/backbone.pth"]
    finished_run(root, rsp4, 0, 50.0, weights=False, **identity, opts=moved, threads=1)
    check_same_identity(plan([rsp4], [0, 1]), str(root), threads=1)
