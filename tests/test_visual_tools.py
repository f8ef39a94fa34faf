"""The demo, the head-visualization tool, the metrics plotter and the confusion-matrix
evaluator, on the synthetic Cityscapes with tiny checkpoints made here. The tools run as
subprocesses, so their command lines are what is tested."""
import glob
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def _make_tiny(directory, name, base):
    """A tiny config based on `base` and a checkpoint of its random initialization (seeded)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from rsp_d2.visualization.loading import load_config

    cfg_path = os.path.join(directory, f"{name}.yaml")
    with open(cfg_path, "w") as f:
        f.write(_TINY.format(base=os.path.join(REPO, base)))
    torch.manual_seed(0)
    model = build_model(load_config(cfg_path))
    DetectionCheckpointer(model, save_dir=str(directory)).save(name)
    return cfg_path, os.path.join(directory, f"{name}.pth")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{"rsp": (config, checkpoint), "baseline": (config, checkpoint)}: an RSP-4 and the sum
    baseline (p2-p5), both tiny."""
    d = tmp_path_factory.mktemp("tiny_models")
    return {"rsp": _make_tiny(d, "rsp4_tiny", "configs/cityscapes/rsp4_R50.yaml"),
            "baseline": _make_tiny(d, "baseline_tiny", "configs/cityscapes/baseline_R50.yaml")}


@pytest.fixture(scope="module")
def val_images(synthetic_root):
    images = sorted(glob.glob(str(synthetic_root / "cityscapes/leftImg8bit/val/*/*.png")))
    assert len(images) >= 2
    return images


@pytest.fixture
def unreadable_image(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"this is not a png")
    return str(path)


def run_tool(*args, cwd=REPO):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


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


def test_figures_have_the_promised_pixel_size(tmp_path):
    """Including sizes whose inches are inexact in binary (970 px = 9.7 in at 100 dpi)."""
    from rsp_d2.visualization import new_figure, save_figure

    for size in [(1620, 970), (1200, 1260), (641, 333), (2331, 1399)]:
        fig = new_figure(*size)
        fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
        save_figure(fig, tmp_path / "f.png")
        assert_png(tmp_path / "f.png", size)


# --------------------------------------------------------------------------- relation figures

@pytest.mark.slow
def test_visualize_relations_draws_the_three_figures(tiny, val_images, tmp_path):
    from rsp_d2.visualization import (propagation_figure_size, query_key_figure_size,
                                      relations_figure_size)

    (cfg, ckpt), (base_cfg, base_ckpt) = tiny["rsp"], tiny["baseline"]
    out = tmp_path / "figures"
    proc = run_tool("tools/visualize_relations.py", "--config-file", cfg, "--checkpoint", ckpt,
                    "--input", val_images[0], "--output", out, "--pixels", "100,200", "250,0",
                    "--baseline-config", base_cfg, "--baseline-checkpoint", base_ckpt)
    assert_ok(proc)
    # RSP-4: 4 relation modules, 2 pixels; levels p2-p7 (6), two models.
    assert relations_figure_size(2, 4) == (420 + 300 * 4, 70 + 300 * 2) == (1620, 670)
    assert query_key_figure_size(4) == (1200, 90 + 230 * 4) == (1200, 1010)
    assert propagation_figure_size(6, 2) == (120 + 240 * 6, 90 + 450 * 2) == (1560, 990)
    assert_png(out / "relations.png", (1620, 670))
    assert_png(out / "query_key_pca.png", (1200, 1010))
    assert_png(out / "propagation.png", (1560, 990))
    assert sorted(os.listdir(out)) == ["propagation.png", "query_key_pca.png", "relations.png"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_checkpoint", "no_rsp_modules", "unreadable_image"])
def test_visualize_relations_refuses_bad_input(case, tiny, val_images, unreadable_image, tmp_path):
    cfg, ckpt = tiny["rsp"]
    image = val_images[0]
    if case == "missing_checkpoint":
        ckpt = str(tmp_path / "nowhere" / "model_final.pth")
        expected = ["checkpoint not found", ckpt]
    elif case == "no_rsp_modules":
        cfg = os.path.join(REPO, "configs/cityscapes/baseline_R50.yaml")
        expected = [cfg, "no rsp/self fusion", "p5p4=sum, p4p3=sum, p3p2=sum"]
    else:
        image = unreadable_image
        expected = ["cannot read image", unreadable_image]
    proc = run_tool("tools/visualize_relations.py", "--config-file", cfg, "--checkpoint", ckpt,
                    "--input", image, "--output", tmp_path / "out")
    assert_clear_error(proc, *expected)
    assert not (tmp_path / "out").exists()


def test_head_figures_refuse_bad_pixels_and_half_a_baseline(tiny, val_images, tmp_path):
    """Checked before any model is built (in-process: no model is loaded either way)."""
    from rsp_d2.visualization import InputError, make_head_figures
    from rsp_d2.visualization.head_figures import parse_pixel

    cfg, ckpt = tiny["rsp"]
    with pytest.raises(InputError, match=r"\(300, 10\)\] lie outside .* \(256 x 512\)"):
        make_head_figures(cfg, ckpt, val_images[0], str(tmp_path), pixels=[(300, 10)])
    with pytest.raises(InputError, match="--baseline-config and --baseline-checkpoint go together"):
        make_head_figures(cfg, ckpt, val_images[0], str(tmp_path), baseline_config=cfg)
    with pytest.raises(InputError, match="expected y,x"):
        parse_pixel("12")
    assert parse_pixel("12,34") == (12, 34)
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def rsp_trace(tiny, val_images):
    from rsp_d2.visualization import Predictor, load_config, read_image, trace_head

    cfg = load_config(tiny["rsp"][0], weights=tiny["rsp"][1])
    predictor = Predictor(cfg)
    image = read_image(val_images[0])
    return predictor, trace_head(predictor, image), image


def test_trace_captures_what_the_head_computes(rsp_trace):
    """The traced maps are the head's own: A_l = Q_l + RSE(Q_l, up(A_{l+1})) (Eq. 4), the
    weights are a softmax over the window positions inside the map, and A_finest is what
    ``head.aggregate`` returns."""
    import torch.nn.functional as F

    predictor, trace, image = rsp_trace
    head = predictor.model.sem_seg_head
    assert trace.levels == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert list(trace.fusions) == ["p7p6", "p6p5", "p5p4", "p4p3", "p3p2"]
    assert [f.label for f in trace.relation_fusions()] == ["RSP-76", "RSP-65", "RSP-54", "RSP-43"]
    assert trace.fusions["p3p2"].kind == "sum" and trace.fusions["p3p2"].weights is None

    assert trace.image.shape == (*IMAGE_SIZE, 3) and trace.original_size == IMAGE_SIZE
    inputs, _ = predictor.preprocess(image)
    model = predictor.model
    with torch.no_grad():
        image = ((inputs["image"] - model.pixel_mean) / model.pixel_std)[None]
        aggregated = head.aggregate(model.backbone(image))
    assert torch.allclose(aggregated[0][0], trace.a["p2"], atol=1e-4)

    for f in trace.relation_fusions():
        module = head.fusions[f.name]
        up = F.interpolate(trace.a[f.coarse][None], size=f.x.shape[-2:], mode="bilinear",
                           align_corners=False)[0]
        assert torch.allclose(f.z, up, atol=1e-5)
        with torch.no_grad():
            rse = module.rse(f.x[None], f.z[None])[0]
        assert torch.allclose(f.context, rse, atol=1e-4)
        k = f.kernel_size
        assert f.weights.shape == (1, k * k, *f.x.shape[-2:])
        assert torch.allclose(f.weights.sum(dim=1), torch.ones(()), atol=1e-5)
        # Top-left pixel: offsets with dy < 0 or dx < 0 fall outside the map, weight 0.
        corner = f.weights[0, :, 0, 0].reshape(k, k)
        assert torch.all(corner[: k // 2] == 0) and torch.all(corner[:, : k // 2] == 0)
        assert torch.all(corner[k // 2:, k // 2:] > 0)


def test_propagation_without_baseline_and_grid_pixels(rsp_trace, tmp_path):
    from rsp_d2.visualization import (draw_propagation, draw_relations, grid_pixels,
                                      propagation_figure_size, relations_figure_size, save_figure)

    _, trace, _ = rsp_trace
    assert grid_pixels(256, 512, 2) == [(64, 128), (64, 384), (192, 128), (192, 384)]
    fig = draw_propagation([("rsp4_tiny", trace)], channel=3, note="baseline not given")
    assert "baseline not given" in fig._suptitle.get_text()
    save_figure(fig, tmp_path / "p.png")
    assert_png(tmp_path / "p.png", propagation_figure_size(6, 1))
    assert propagation_figure_size(6, 1) == (1560, 540)
    save_figure(draw_relations(trace, grid_pixels(256, 512, 1), background="image"),
                tmp_path / "r.png", max_colors=64)
    pixels = assert_png(tmp_path / "r.png", relations_figure_size(1, 4))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) <= 64


def test_window_cells_place_weights_at_dilated_offsets():
    from rsp_d2.visualization.relations import window_cells

    w = np.arange(1, 10, dtype=float).reshape(3, 3)
    w[0, 0] = 0  # an offset outside the map
    cells = window_cells(w, 3)  # kernel 3, dilation 3: a 7 x 7 region
    assert cells.shape == (7, 7)
    assert np.isnan(cells[0, 0])
    assert (cells[0, 3], cells[3, 3], cells[6, 6]) == (2, 5, 9)
    assert np.isnan(cells[1]).all() and np.isnan(cells[:, 4]).all()  # between samples
    assert np.array_equal(window_cells(w, 1)[1:], w[1:])


# ----------------------------------------------------------------------------------- demo

@pytest.mark.slow
def test_demo_draws_semantic_predictions(tiny, val_images, tmp_path):
    cfg, ckpt = tiny["rsp"]
    out = tmp_path / "demo"
    proc = run_tool("demo/demo.py", "--config-file", cfg, "--input", val_images[0],
                    "--output", out, "--opts", "MODEL.WEIGHTS", ckpt)
    assert_ok(proc)
    written = out / os.path.basename(val_images[0])
    drawn = assert_png(written, (IMAGE_SIZE[1], IMAGE_SIZE[0]))
    original = np.asarray(Image.open(val_images[0]).convert("RGB"))
    assert np.abs(drawn.astype(int) - original).mean() > 5  # the segmentation is drawn over it
    assert "images" in proc.stderr and "100%" in proc.stderr  # tqdm progress bar


@pytest.mark.slow
def test_demo_video(tiny, val_images, tmp_path):
    cfg, ckpt = tiny["rsp"]
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5,
                             (IMAGE_SIZE[1], IMAGE_SIZE[0]))
    for path in val_images[:2]:
        writer.write(cv2.imread(path))
    writer.release()
    proc = run_tool("demo/demo.py", "--config-file", cfg, "--video-input", video,
                    "--output", tmp_path / "out", "--opts", "MODEL.WEIGHTS", ckpt)
    assert_ok(proc)
    result = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    frames = []
    while True:
        ok, frame = result.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 2 and frames[0].shape == (*IMAGE_SIZE, 3)
    assert frames[0].std() > 5
    assert os.listdir(tmp_path / "out") == ["clip.mp4"]  # no temporary file left


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_checkpoint", "unreadable_image"])
def test_demo_refuses_bad_input(case, tiny, val_images, unreadable_image, tmp_path):
    cfg, ckpt = tiny["rsp"]
    inputs = [val_images[0]]
    if case == "missing_checkpoint":
        ckpt = str(tmp_path / "missing.pth")
        expected = ["checkpoint not found", ckpt]
    else:
        inputs, expected = [unreadable_image], ["cannot read image", unreadable_image]
    proc = run_tool("demo/demo.py", "--config-file", cfg, "--input", *inputs,
                    "--output", tmp_path / "out", "--opts", "MODEL.WEIGHTS", ckpt)
    assert_clear_error(proc, *expected)


def test_demo_metadata_has_fixed_cityscapes_colours(tiny):
    """Detectron2's Cityscapes metadata has no colours (random ones would be drawn); the
    demo's copy has the official ones, and the catalog's entry is left alone."""
    from detectron2.data import MetadataCatalog

    from rsp_d2.visualization import demo_metadata, load_config

    meta = demo_metadata(load_config(tiny["rsp"][0]))
    assert meta.stuff_classes[:3] == ["road", "sidewalk", "building"]
    assert meta.stuff_colors[:3] == [(128, 64, 128), (244, 35, 232), (70, 70, 70)]
    assert not MetadataCatalog.get("cityscapes_fine_sem_seg_val").get("stuff_colors")


def test_demo_inputs_and_outputs(val_images, tmp_path):
    from rsp_d2.visualization import InputError, check_checkpoint, expand_inputs, output_paths

    with pytest.raises(InputError, match="MODEL.WEIGHTS is empty"):
        check_checkpoint("")
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.jpg")])
    with pytest.raises(InputError, match="image not found"):
        expand_inputs([str(tmp_path / "a.png")])
    val_dir = os.path.dirname(os.path.dirname(val_images[0]))  # leftImg8bit/val: city folders
    found = expand_inputs([val_dir, val_images[0]])  # a folder, recursively; no duplicates
    assert [p for p, _ in found] == sorted(glob.glob(os.path.join(val_dir, "*", "*.png")))
    assert found[0][1] == os.path.relpath(val_images[0], val_dir)
    targets = output_paths(found, str(tmp_path / "out"))
    assert targets[0] == str(tmp_path / "out" / found[0][1])
    assert output_paths(found[:1], str(tmp_path / "one.jpg")) == [str(tmp_path / "one.jpg")]
    with pytest.raises(InputError, match="would be written to"):
        output_paths([("a/x.png", "x.png"), ("b/x.png", "x.png")], str(tmp_path / "out"))


def test_demo_draws_panoptic_predictions():
    """Panoptic FPN outputs go through Visualizer.draw_panoptic_seg (no model needed)."""
    from detectron2.data import MetadataCatalog

    from rsp_d2.visualization import SegmentationDemo, load_config

    cfg = load_config(os.path.join(REPO, "configs/panoptic_rsp4.yaml"))
    seg = torch.zeros(64, 96, dtype=torch.int32)
    seg[:, 48:] = 1
    seg[10:30, 10:30] = 2
    predictions = {"panoptic_seg": (seg, [
        {"id": 1, "category_id": 1, "isthing": False, "area": int((seg == 1).sum())},
        {"id": 2, "category_id": 0, "isthing": True, "score": 0.9, "area": 400}])}
    demo = SegmentationDemo(cfg, predictor=lambda image: predictions)
    assert "person" in demo.metadata.thing_classes
    assert demo.metadata.stuff_colors == MetadataCatalog.get(cfg.DATASETS.TEST[0]).stuff_colors
    image = np.full((64, 96, 3), 127, dtype=np.uint8)
    out, vis = demo.run_on_image(image)
    drawn = vis.get_image()
    assert out is predictions and drawn.shape == (64, 96, 3)
    assert np.abs(drawn[:, 48:].astype(int) - 127).mean() > 5  # the stuff segment
    assert np.abs(drawn[12:28, 12:28].astype(int) - 127).mean() > 5  # the person


# ---------------------------------------------------------------------------- plot_metrics

def _write_metrics(path, scale, eval_every=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for it in range(19, 400, 20):
            loss = scale * 2.5 * math.exp(-it / 150) + 0.3
            f.write(json.dumps({"iteration": it, "total_loss": loss, "loss_sem_seg": loss,
                                "lr": 0.02 * (0.1 if it >= 300 else 1.0), "time": 0.5,
                                "data_time": 0.01, "eta_seconds": 100}) + "\n")
            if (it + 1) % eval_every == 0:
                f.write(json.dumps({"iteration": it, "sem_seg/mIoU": 20 + it / 10 / scale,
                                    "sem_seg/IoU-road": 80.0}) + "\n")


@pytest.mark.slow
def test_plot_metrics_two_runs(tmp_path):
    from rsp_d2.visualization import load_run, metrics_figure_size

    _write_metrics(tmp_path / "rsp4" / "metrics.json", 1.0)
    _write_metrics(tmp_path / "baseline" / "metrics.json", 1.3)
    out = tmp_path / "curves.png"
    proc = run_tool("tools/plot_metrics.py", tmp_path / "rsp4", tmp_path / "baseline/metrics.json",
                    "--output", out)
    assert_ok(proc)
    assert metrics_figure_size(3) == (1200, 960)  # losses, learning rate, sem_seg
    assert_png(out, (1200, 960))
    assert "2 runs" in proc.stdout



def test_metrics_series_keys_and_groups(tmp_path):
    from rsp_d2.visualization import InputError, load_run, plot_metrics, save_figure
    from rsp_d2.visualization.metrics import default_keys, group_keys

    _write_metrics(tmp_path / "rsp4" / "metrics.json", 1.0)
    run = load_run(str(tmp_path / "rsp4"))
    assert run.name == "rsp4"
    its, vals = run.series("sem_seg/mIoU")
    assert its == [99, 199, 299, 399] and vals == pytest.approx([29.9, 39.9, 49.9, 59.9])
    # Timings and per-class IoUs are not plotted by default.
    assert default_keys([run]) == ["loss_sem_seg", "lr", "sem_seg/mIoU", "total_loss"]
    assert list(group_keys(default_keys([run])).items()) == [
        ("losses", ["loss_sem_seg", "total_loss"]), ("learning rate", ["lr"]),
        ("sem_seg", ["sem_seg/mIoU"])]
    save_figure(plot_metrics([run], ["total_loss", "sem_seg/mIoU"]), tmp_path / "k.png")
    assert_png(tmp_path / "k.png", (1200, 60 + 300 * 2))
    with pytest.raises(InputError, match="none of the keys .*'nope'.* keys found: .*total_loss"):
        plot_metrics([run], ["nope"])
    with pytest.raises(InputError, match="metrics file not found: .*nowhere.metrics.json"):
        load_run(str(tmp_path / "nowhere" / "metrics.json"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.json").write_text("\n\n")
    with pytest.raises(InputError, match="metrics.json is empty"):
        load_run(str(tmp_path / "empty"))


@pytest.mark.slow
def test_plot_metrics_names_the_line_that_is_not_json(tmp_path):
    run = tmp_path / "run"
    metrics = run / "metrics.json"
    _write_metrics(metrics, 1.0)
    with open(metrics, "a") as f:
        f.write('{"iteration": 419, "total_loss": 0.5\n')  # a run killed mid-write
    proc = run_tool("tools/plot_metrics.py", run, "--output", tmp_path / "x.png")
    # 20 training and 4 evaluation lines come before it.
    assert_clear_error(proc, metrics, "line 25", "not JSON")
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------ confusion matrix

def test_confusion_matrix_evaluator(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from rsp_d2.evaluation import CONFUSION_JSON, CONFUSION_PNG, ConfusionMatrixSemSegEvaluator
    from rsp_d2.visualization import confusion_figure_size

    classes = ["road", "car", "person"]
    gts = [np.array([[0, 0, 1, 1], [2, 2, 255, 0]], dtype=np.uint8),
           np.array([[1, 1, 1, 2], [0, 255, 255, 2]], dtype=np.uint8)]
    preds = [np.array([[0, 1, 1, 1], [2, 0, 0, 0]]), np.array([[1, 1, 0, 2], [0, 2, 1, 1]])]
    records = []
    for i, gt in enumerate(gts):
        path = tmp_path / f"gt_{i}.png"
        Image.fromarray(gt).save(path)
        records.append({"file_name": f"image_{i}.png", "sem_seg_file_name": str(path)})
    name = f"confusion_test_{os.getpid()}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=classes, ignore_label=255)
    try:
        out = tmp_path / "inference"
        evaluator = ConfusionMatrixSemSegEvaluator(name, distributed=False, output_dir=str(out))
        evaluator.reset()
        for record, pred in zip(records, preds):
            logits = torch.nn.functional.one_hot(torch.as_tensor(pred), 3).permute(2, 0, 1).float()
            evaluator.process([record], [{"sem_seg": logits}])
        results = evaluator.evaluate()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    # Rows: ground truth, columns: prediction; the 3 ignored pixels are not counted.
    expected = np.zeros((3, 3), dtype=int)
    for gt, pred in zip(gts, preds):
        for g, p in zip(gt.ravel(), pred.ravel()):
            if g != 255:
                expected[g, p] += 1
    assert expected.tolist() == [[3, 1, 0], [1, 4, 0], [1, 1, 2]]
    data = json.loads((out / CONFUSION_JSON).read_text())
    assert data["class_names"] == classes
    assert data["counts"] == expected.tolist()
    assert data["ignored_pixels"] == 3
    assert (data["rows"], data["columns"]) == ("ground truth", "prediction")
    # The matrix is SemSegEvaluator's own: its mIoU follows from the same counts.
    tp = np.diag(expected)
    iou = tp / (expected.sum(0) + expected.sum(1) - tp)
    assert results["sem_seg"]["mIoU"] == pytest.approx(100 * iou.mean())
    assert confusion_figure_size(3) == (640, 640)
    assert_png(out / CONFUSION_PNG, (640, 640))
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary file left


def test_confusion_matrix_evaluator_needs_an_output_dir():
    from rsp_d2.evaluation import ConfusionMatrixSemSegEvaluator

    with pytest.raises(ValueError, match="needs an output_dir"):
        ConfusionMatrixSemSegEvaluator("cityscapes_fine_sem_seg_val", output_dir=None)


@pytest.mark.slow
def test_make_figures_script_regenerates_every_readme_picture(tiny, synthetic_root, tmp_path):
    """docs/make_figures.sh, the README's command for its pictures, on a tiny run folder."""
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    config, checkpoint = tiny["rsp"]
    shutil.copy(config, run / "config.yaml")
    shutil.copy(checkpoint, run / "model_final.pth")
    (run / "metrics.json").write_text("".join(
        json.dumps({"iteration": i, "total_loss": 2.0 / (i + 1), "lr": 0.01}) + "\n" for i in range(5)))
    out = tmp_path / "figures"
    proc = subprocess.run(["bash", "docs/make_figures.sh", str(run)], cwd=REPO, capture_output=True,
                          text=True, timeout=600,
                          env=dict(os.environ, PY=sys.executable, FIGURES_DIR=str(out),
                                   DETECTRON2_DATASETS=str(synthetic_root)))
    assert_ok(proc)
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(os.path.join(REPO, "docs", "images"))), names
    for name in names:
        assert 0 < os.path.getsize(out / name) <= 300_000
