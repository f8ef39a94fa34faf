"""tools/compare_heads.py end to end: two variants x one seed of the tiny demo model on the
synthetic Cityscapes, killed during the second run and resumed; the report's numbers are the
runs' own results.json; bad input is one error line."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import rsp_d2
from rsp_d2.analysis.compare_presets import PRESETS

from support.tools import call_main, env_for, run_script
from support.train_net import REPO, SEMANTIC_TINY, TIMEOUT_S

TOOL = str(REPO / "tools" / "compare_heads.py")
SUM = ["MODEL.SEM_SEG_HEAD.RSP.FUSION", "['sum','sum','sum','sum','sum']"]


def _command(out, *extra):
    return [sys.executable, TOOL, "--variant", "rsp4", SEMANTIC_TINY,
            "--variant", "sum", SEMANTIC_TINY, *SUM, "--seeds", "0", "--output", str(out),
            "--relation-images", "1", *extra]


def _results(out, name):
    with open(out / name / "seed0" / "inference" / "results.json") as f:
        return json.load(f)


@pytest.mark.slow
def test_killed_comparison_resumes_and_reports_the_runs(synthetic_root, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    env = env_for(synthetic_root, threads=1)
    first = out / "rsp4" / "seed0" / "inference" / "results.json"
    proc = subprocess.Popen(_command(out), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + TIMEOUT_S
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.exists(), proc.communicate()[0] if proc.poll() is not None else "timeout"
    # the comparison dies while the second variant trains (or just after the first finished)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    model = out / "rsp4" / "seed0" / "model_final.pth"
    stamp = model.stat().st_mtime_ns
    assert not (out / "sum" / "seed0" / "inference" / "results.json").exists()

    # resumed in this process (the entry point ran above); its runs get the same environment
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    done = call_main(*_command(out)[1:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "[skip] rsp4 seed 0" in done.stdout and "[run]  sum seed 0" in done.stdout
    assert model.stat().st_mtime_ns == stamp  # not retrained
    # a finished run keeps its final weights, not the periodic checkpoints only a resume needs
    for name in ("rsp4", "sum"):
        assert sorted(p.name for p in (out / name / "seed0").glob("*.pth")) == ["model_final.pth"]

    with open(out / "comparison.json") as f:
        report = json.load(f)
    assert report["missing"] == [] and report["reference"] == "rsp4"
    for name in ("rsp4", "sum"):
        miou = _results(out, name)["sem_seg"]["mIoU"]
        entry = report["variants"][name]
        assert entry["runs"]["0"]["mIoU"] == pytest.approx(miou)
        assert entry["mIoU"]["median"] == pytest.approx(miou)
        assert entry["flops"] > 0 and entry["params"] > 0
    rsp4, base = report["variants"]["rsp4"], report["variants"]["sum"]
    assert rsp4["flops"] > base["flops"]  # the relation modules cost
    assert set(rsp4["relation_content"]) == {"RSP-76", "RSP-65", "RSP-54", "RSP-43"}
    assert base["relation_content"] == {}
    diff = base["vs_reference"]
    assert diff["n"] == 1 and diff["mean"] == pytest.approx(
        base["runs"]["0"]["mIoU"] - rsp4["runs"]["0"]["mIoU"])
    table = (out / "comparison.md").read_text()
    assert f"{rsp4['mIoU']['median']:.1f}" in table and "| sum | 0 |" in table
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # and collected again, without training
    again = call_main(*_command(out, "--collect-only", "--report", str(tmp_path / "r"))[1:])
    assert again.returncode == 0 and "[run]" not in again.stdout, again.stdout
    with open(tmp_path / "r.json") as f:
        assert json.load(f)["variants"]["sum"]["runs"] == base["runs"]


@pytest.mark.parametrize("args, message", [
    (["--preset", "nope"], "--preset 'nope'"),
    (["--variant", "a", "configs/synthetic/missing.yaml"], "configs/synthetic/missing.yaml"),
    (["--variant", "a", SEMANTIC_TINY, "SOLVER.NOPE", "1"], "SOLVER.NOPE"),
    (["--variant", "a", SEMANTIC_TINY, "--variant", "a", SEMANTIC_TINY], "appear twice"),
    (["--variant", "a", SEMANTIC_TINY, "--reference", "b", "--collect-only"], "--reference"),
    (["--variant", "a/b", SEMANTIC_TINY], "plain folder name"),
    (["--variant", "a", SEMANTIC_TINY, "--jobs", "0"], "--jobs must be >= 1"),
    (["--variant", "a", SEMANTIC_TINY, "MODEL.WEIGHTS", "/nope.pth"],
     "variant a: MODEL.WEIGHTS /nope.pth does not exist: expected a checkpoint file"),
])
def test_bad_input_is_one_error_line(tmp_path, args, message):
    proc = call_main("tools/compare_heads.py", "--output", tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines


# Each preset's variants, and chains of them whose head FLOPs must rise (each relation module
# costs, and more at a finer level).
_MINI_PRESETS = {
    "mini": (["sum", "semantic_fpn", "rsp54", "rsp2", "self2", "context2", "rsp4", "sum_p2p7"],
             [("sum", "rsp54", "rsp2"), ("sum_p2p7", "rsp4")]),
    "mini_table6": (["sum_p2p7", "rsp76", "rsp43", "rsp76_65", "rsp54_43", "rsp4"],
                    [("sum_p2p7", "rsp76", "rsp76_65", "rsp4"), ("rsp76", "rsp43"),
                     ("rsp76_65", "rsp54_43", "rsp4")]),
}


@pytest.mark.parametrize("preset", sorted(_MINI_PRESETS))
def test_mini_presets_report_flops_and_missing_runs_without_training(tmp_path, preset):
    """The miniature benchmark presets: every variant's config merges and its head is counted;
    with no finished run the report lists them all as missing."""
    names, rising = _MINI_PRESETS[preset]
    proc = call_main(TOOL, "--preset", preset, "--seeds", "0", "1", "--output", tmp_path,
                     "--collect-only")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(tmp_path / "comparison.json") as f:
        report = json.load(f)
    assert list(report["variants"]) == names
    assert len(report["missing"]) == 2 * len(names)
    flops = {n: report["variants"][n]["flops"] for n in names}
    for chain in rising:
        assert [flops[n] for n in chain] == sorted({flops[n] for n in chain}), (chain, flops)
    assert all(report["variants"][n]["at"] == [256, 512] for n in names)


def test_table6_miniature_shares_its_controls_with_mini():
    """sum_p2p7 and rsp4 are the same runs in both presets: a Table VI comparison in the
    published comparison's folder reuses them instead of training them again."""
    mini = {name: rest for name, *rest in PRESETS["mini"]}
    shared = {name: rest for name, *rest in PRESETS["mini_table6"] if name in mini}
    assert sorted(shared) == ["rsp4", "sum_p2p7"]
    assert all(shared[name] == mini[name] for name in shared)


@pytest.mark.slow
def test_jobs_train_runs_side_by_side_with_a_share_of_the_cores(synthetic_root, tmp_path):
    """--jobs 2: the two runs of a seed train at once, each with half the cores as its
    intra-op threads (OMP_NUM_THREADS unset), and the report is the same as one at a time."""
    env = env_for(synthetic_root)
    env.pop("OMP_NUM_THREADS", None)
    out = tmp_path / "cmp"
    proc = run_script(TOOL, *_command(out, "--jobs", "2")[2:], env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    infos = []
    for name in ("rsp4", "sum"):
        with open(out / name / "seed0" / "run_info.json") as f:
            infos.append(json.load(f))
        assert infos[-1]["threads"] == max(1, (os.cpu_count() or 1) // 2)
        assert infos[-1]["code"]["rsp_d2"] == rsp_d2.__version__
    assert max(i["started"] for i in infos) < min(i["ended"] for i in infos)  # overlapping
    with open(out / "comparison.json") as f:
        report = json.load(f)
    assert report["missing"] == []
    for name in ("rsp4", "sum"):
        assert report["variants"][name]["runs"]["0"]["mIoU"] == _results(out, name)["sem_seg"]["mIoU"]
