"""User mistakes with the tools in tools/: a path they cannot write, a number that would measure or
draw nothing, a device that is not there. Each ends in one ``error:`` line naming the argument,
exit status 2, no traceback, and is refused before any work: nothing is written.

The tools run in this process (``call_main``): every refusal happens before a model is built or
a dataset read. Each case is chosen so that, without its check, the tool would fail otherwise
(a traceback, another error) or succeed, and the test with it.
"""
import json
import os
import re
import stat

import pytest
import torch

from support.tools import call_main
from support.train_net import SEMANTIC_TINY

from rsp_d2.utils.errors import InputError
from rsp_d2.utils.paths import check_output_dir, check_output_file


def _raises(message):
    """pytest.raises of an InputError whose message is exactly `message`."""
    return pytest.raises(InputError, match=f"^{re.escape(message)}$")


def _tree(root):
    """Every path under `root`, to show that a refused run wrote nothing."""
    return sorted(os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files)


def _refused(proc, *fragments):
    """The one error line of a refused tool run (exit 2, no traceback), checked to contain
    every fragment."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.stdout[-2000:], proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def places(tmp_path):
    """A folder holding a regular file ``a_file`` and a folder ``a_dir``."""
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "a_dir").mkdir()
    return tmp_path


def _read_only_folder(tmp_path, how):
    """A folder this process may not write into: mode 0o555 (root ignores mode bits, as does
    os.access for root), or /proc/sys, which not even root may add files to."""
    if how == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes into a 0o555 folder: no read-only folder by mode bits")
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH
                     | stat.S_IXOTH)
        return folder
    if os.access("/proc/sys", os.W_OK):
        pytest.skip("/proc/sys is writable here")
    return "/proc/sys"


# ------------------------------------------------------------------------- the shared checks

def test_output_file_checks(places):
    check_output_file(places / "new.json", "--out")  # a new file in an existing folder
    check_output_file(places / "a_file", "--out")  # replaced
    check_output_file(places / "x" / "y" / "new.json", "--out", create_parents=True)
    with _raises(f"--out {places}/a_dir is a folder: expected a file"):
        check_output_file(places / "a_dir", "--out")
    with _raises(f"--out {places}/x/new.json: folder {places}/x does not exist; create it "
                 "first or choose another path"):
        check_output_file(places / "x" / "new.json", "--out")
    with _raises(f"--out {places}/a_file/x/new.json cannot be created: {places}/a_file is a "
                 "file, not a folder"):
        check_output_file(places / "a_file" / "x" / "new.json", "--out", create_parents=True)
    with _raises("--out is empty: expected a file"):
        check_output_file("", "--out")
    assert _tree(places) == [str(places / "a_dir"), str(places / "a_file")]  # only looked


def test_output_dir_checks(places):
    check_output_dir(places / "a_dir", "--output")
    check_output_dir(places / "x" / "y", "--output")  # made by the tool
    with _raises(f"--output {places}/a_file is a file: expected a folder"):
        check_output_dir(places / "a_file", "--output")
    with _raises(f"--output {places}/a_file/x cannot be created: {places}/a_file is a file, "
                 "not a folder"):
        check_output_dir(places / "a_file" / "x", "--output")
    with _raises(f"--output {places}/x: folder {places}/x does not exist; create it first "
                 "or choose another path"):
        check_output_dir(places / "x", "--output", create=False)
    assert _tree(places) == [str(places / "a_dir"), str(places / "a_file")]


@pytest.mark.parametrize("how", ["chmod", "/proc/sys"])
def test_read_only_folder_is_refused(tmp_path, how):
    folder = _read_only_folder(tmp_path, how)
    expected = f"cannot be written: no write permission on {folder}"
    with _raises(f"--out {folder}/b.json {expected}"):
        check_output_file(os.path.join(folder, "b.json"), "--out")
    with _raises(f"--root {folder}/new/data {expected}"):
        check_output_dir(os.path.join(folder, "new", "data"), "--root")


# ------------------------------------------------------------------------- tools/benchmark.py

@pytest.mark.parametrize("args, fragments", [
    (["--train-batch", "0"], ["--train-batch 0: expected a positive integer"]),
    (["--repeats", "0"], ["--repeats 0: expected a positive integer"]),
    (["--repeats", "-1"], ["--repeats -1: expected a positive integer"]),
    (["--threads", "0"], ["--threads 0: expected a positive integer"]),
    (["--device", "foo"], ["--device foo: expected cpu or cuda"]),
    (["--device", "cuda:1"], ["--device cuda:1: expected cpu or cuda"]),
], ids=["train_batch_0", "repeats_0", "repeats_-1", "threads_0", "device_foo", "device_cuda:1"])
def test_benchmark_refuses_bad_settings(tmp_path, args, fragments):
    out = tmp_path / "b.json"
    # --quick --only rse: were a check missing, the run would take seconds, not minutes
    _refused(call_main("tools/benchmark.py", "--quick", "--only", "rse", "--device", "cpu",
                       "--out", out, *args), *fragments)
    assert _tree(tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_benchmark_refuses_cuda_without_a_gpu(tmp_path):
    line = _refused(call_main("tools/benchmark.py", "--quick", "--device", "cuda", "--out",
                              tmp_path / "b.json"))
    assert line == "error: --device cuda: no CUDA device is visible here; use --device cpu"
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("case", ["under_a_file", "a_folder", "markdown_over_json",
                                  "markdown_is_a_folder", "read_only"])
def test_benchmark_refuses_an_unwritable_out(places, case):
    before = _tree(places)
    if case == "under_a_file":
        out, fragments = places / "a_file" / "b.json", ["cannot be created", "is a file"]
    elif case == "a_folder":
        out, fragments = places / "a_dir", [f"--out {places}/a_dir is a folder: expected a file"]
    elif case == "markdown_over_json":
        out, fragments = places / "b.md", ["the markdown report would overwrite it"]
    elif case == "markdown_is_a_folder":
        out, fragments = places / "a_dir.json", [f"{places}/a_dir.md is a folder"]
        (places / "a_dir.md").mkdir()
        before = _tree(places)
    else:
        folder = _read_only_folder(places, "/proc/sys")
        out, fragments = os.path.join(folder, "b.json"), ["no write permission on /proc/sys"]
    _refused(call_main("tools/benchmark.py", "--quick", "--only", "rse", "--device", "cpu",
                       "--out", out), "--out", *fragments)
    assert _tree(places) == before


# ------------------------------------------------------------------ tools/visualize_relations.py

@pytest.mark.parametrize("args, fragments", [
    (["--grid", "0"], ["--grid 0: expected 1 to 4"]),
    (["--grid", "5"], ["--grid 5: expected 1 to 4"]),
    (["--channel", "-1"], ["--channel -1: expected a channel index >= 0"]),
    (["--max-colors", "-1"], ["--max-colors -1: expected 1 to 256 colours, or 0"]),
    (["--max-colors", "300"], ["--max-colors 300: expected 1 to 256 colours, or 0"]),
    (["--output", "{places}/a_file"], ["--output {places}/a_file is a file: expected a folder"]),
    (["--output", "{places}/a_file/figures"], ["cannot be created: {places}/a_file is a file"]),
    (["--output", "{places}"], ["--output {places}/relations.png is a folder: expected a file"]),
], ids=["grid_0", "grid_5", "channel_-1", "max_colors_-1", "max_colors_300", "output_a_file",
        "output_under_a_file", "figure_a_folder"])
def test_visualize_relations_refuses_bad_arguments(places, args, fragments):
    """Before the config is read: a missing config would otherwise be the error."""
    (places / "relations.png").mkdir()
    before = _tree(places)
    args = [a.format(places=places) for a in args]
    proc = call_main("tools/visualize_relations.py", "--config-file", places / "missing.yaml",
                     "--checkpoint", places / "missing.pth", "--input", places / "missing.png",
                     "--output", places / "figures", *args)
    _refused(proc, *[f.format(places=places) for f in fragments])
    assert _tree(places) == before


@pytest.mark.slow
def test_visualize_relations_refuses_a_missing_channel_before_writing(tiny, val_images, tmp_path):
    """The tiny models have 64 channels: known once the head is traced, and refused before
    any of the three figures is written."""
    (cfg, ckpt), (base_cfg, base_ckpt) = tiny["rsp"], tiny["baseline"]
    proc = call_main("tools/visualize_relations.py", "--config-file", cfg, "--checkpoint", ckpt,
                     "--input", val_images[0], "--output", tmp_path / "figures",
                     "--baseline-config", base_cfg, "--baseline-checkpoint", base_ckpt,
                     "--channel", 64)
    _refused(proc, "--channel 64 does not exist", "has 64 channels")
    assert not (tmp_path / "figures").exists()


# ---------------------------------------------------------------------- the other tools

def _metrics_run(folder):
    folder.mkdir()
    (folder / "metrics.json").write_text("".join(
        json.dumps({"iteration": i, "total_loss": 2.0 / (i + 1), "lr": 0.01}) + "\n"
        for i in range(5)))
    return folder


@pytest.mark.parametrize("output, fragment", [
    ("{places}/a_file/curves.png", "cannot be created: {places}/a_file is a file"),
    ("{places}/a_dir", "--output {places}/a_dir is a folder: expected a file"),
], ids=["under_a_file", "a_folder"])
def test_plot_metrics_refuses_an_unwritable_output(places, output, fragment):
    run = _metrics_run(places / "run")
    before = _tree(places)
    _refused(call_main("tools/plot_metrics.py", run, "--output", output.format(places=places)),
             fragment.format(places=places))
    assert _tree(places) == before


@pytest.mark.parametrize("args, fragment", [
    (["--input-size", "0", "64"], "--input-size 0 64: expected two positive integers"),
    (["--json", "{places}/missing/head.json"],
     "--json {places}/missing/head.json: folder {places}/missing does not exist"),
    (["--json", "{places}/a_dir"], "--json {places}/a_dir is a folder: expected a file"),
], ids=["input_size_0", "json_missing_folder", "json_a_folder"])
def test_analyze_head_refuses_before_counting(places, args, fragment):
    before = _tree(places)
    proc = call_main("tools/analyze_head.py", "--config-file", SEMANTIC_TINY,
                     "--input-size", "64", "128", *[a.format(places=places) for a in args])
    _refused(proc, fragment.format(places=places))
    assert _tree(places) == before


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "-1"], "--seed -1: expected an integer >= 0"),
    (["--root", "{places}/a_file"], "--root {places}/a_file is a file: expected a folder"),
    (["--root", "{places}/a_file/data"], "cannot be created: {places}/a_file is a file"),
    (["--root", "/proc/sys/rsp_data"], "no write permission on /proc/sys"),
], ids=["seed_-1", "root_a_file", "root_under_a_file", "root_read_only"])
def test_make_synthetic_datasets_refuses_bad_arguments(places, args, fragment):
    if "/proc/sys" in fragment:
        _read_only_folder(places, "/proc/sys")
    before = _tree(places)
    proc = call_main("tools/make_synthetic_datasets.py", "--root", places / "data",
                     "--num-train", 1, "--num-val", 1, "--only", "cityscapes",
                     *[a.format(places=places) for a in args])
    _refused(proc, fragment.format(places=places))
    assert _tree(places) == before


@pytest.mark.parametrize("args, fragment", [
    (["--coco-root", "{places}", "--workers", "0"], "--workers 0: expected a positive integer"),
    (["--coco-root", "{places}/a_file"],
     "output folder of --coco-root {places}/a_file/panoptic_stuff_val2017 cannot be created"),
    (["--panoptic-json", "{places}/p.json", "--panoptic-root", "{places}/a_dir",
      "--output-dir", "{places}/a_file"], "--output-dir {places}/a_file is a file"),
], ids=["workers_0", "coco_root_a_file", "output_dir_a_file"])
def test_prepare_panoptic_fpn_refuses_bad_arguments(places, args, fragment):
    """Checked before the annotations are read (they do not exist here)."""
    before = _tree(places)
    proc = call_main("tools/prepare_panoptic_fpn.py", "--splits", "val2017",
                     *[a.format(places=places) for a in args])
    _refused(proc, fragment.format(places=places))
    assert _tree(places) == before


@pytest.mark.parametrize("args, fragment", [
    (["--output", "{places}/a_file"], "--output {places}/a_file is a file: expected a folder"),
    (["--seeds", "-1", "0"], "--seeds [-1]: expected integers >= 0"),
    (["--report", "{places}/a_dir/"], "--report {places}/a_dir/: expected a path prefix"),
    (["--report", "{places}/a_file/cmp"], "cannot be created: {places}/a_file is a file"),
], ids=["output_a_file", "seeds_-1", "report_a_folder", "report_under_a_file"])
def test_compare_heads_refuses_bad_arguments(places, args, fragment):
    """--collect-only: were a check missing, the tool would write a report, not train."""
    before = _tree(places)
    proc = call_main("tools/compare_heads.py", "--variant", "a", SEMANTIC_TINY, "--seeds", "0",
                     "--output", places / "runs", "--collect-only", "--relation-images", "0",
                     *[a.format(places=places) for a in args])
    _refused(proc, fragment.format(places=places))
    assert _tree(places) == before


@pytest.mark.parametrize("args, fragment", [
    (["--num-overlays", "-1"], "--num-overlays -1: expected an integer >= 0"),
    (["--output-dir", "{places}/a_file/run"], "--output-dir {places}/a_file/run cannot be created"),
], ids=["num_overlays_-1", "output_dir_under_a_file"])
def test_train_demo_refuses_before_generating_data(places, args, fragment, monkeypatch):
    """A missing config: were a check missing, train_net's preflight would refuse that instead
    (after the data is generated)."""
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)  # the tool sets it
    before = _tree(places)
    proc = call_main("tools/train_demo.py", "--data-root", places / "data", "--config-file",
                     places / "missing.yaml", "--output-dir", places / "run",
                     *[a.format(places=places) for a in args])
    _refused(proc, fragment.format(places=places))
    assert _tree(places) == before


@pytest.mark.parametrize("output, fragment", [
    ("{places}/missing/m.onnx", "--output {places}/missing/m.onnx: folder {places}/missing does "
                                "not exist"),
    ("{places}/a_dir", "--output {places}/a_dir is a folder: expected a file"),
], ids=["missing_folder", "a_folder"])
def test_export_model_refuses_an_unwritable_output_before_exporting(places, output, fragment):
    # MODEL.WEIGHTS is empty: refused after the output check, had the export work begun
    before = _tree(places)
    _refused(call_main("tools/export_model.py", "--config-file", SEMANTIC_TINY, "--output",
                       output.format(places=places)), fragment.format(places=places))
    assert _tree(places) == before
