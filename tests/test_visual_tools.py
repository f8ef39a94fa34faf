"""The head-visualization tool, the figures and the metrics plotter, on the synthetic Cityscapes
with tiny checkpoints (conftest's ``tiny``). The tools run as subprocesses, so their command
lines are what is tested."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from support.tools import IMAGE_SIZE, REPO, assert_clear_error, assert_ok, assert_png, call_main


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
    proc = call_main("tools/visualize_relations.py", "--config-file", cfg, "--checkpoint", ckpt,
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
    # the content-vs-position score of every relation module (rsp_d2.visualization.relation_content)
    for module in ("RSP-76", "RSP-65", "RSP-54", "RSP-43"):
        line = next(l for l in proc.stdout.splitlines() if l.startswith(f"{module}: content"))
        assert 0.0 <= float(line.split("content fraction ")[1].split()[0]) <= 1.0, line


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
    proc = call_main("tools/visualize_relations.py", "--config-file", cfg, "--checkpoint", ckpt,
                     "--input", image, "--output", tmp_path / "out")
    assert_clear_error(proc, *expected)
    assert not (tmp_path / "out").exists()


def test_head_figures_refuse_bad_pixels_and_half_a_baseline(tiny, val_images, tmp_path):
    """Checked before any model is built (in-process: no model is loaded either way)."""
    from rsp_d2.utils.errors import InputError
    from rsp_d2.visualization import make_head_figures
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
    from rsp_d2.config import load_config
    from rsp_d2.engine import Predictor, read_image
    from rsp_d2.visualization import trace_head

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
    from rsp_d2.visualization import metrics_figure_size

    _write_metrics(tmp_path / "rsp4" / "metrics.json", 1.0)
    _write_metrics(tmp_path / "baseline" / "metrics.json", 1.3)
    out = tmp_path / "curves.png"
    proc = call_main("tools/plot_metrics.py", tmp_path / "rsp4", tmp_path / "baseline/metrics.json",
                     "--output", out)
    assert_ok(proc)
    assert metrics_figure_size(3) == (1200, 960)  # losses, learning rate, sem_seg
    assert_png(out, (1200, 960))
    assert "2 runs" in proc.stdout



def test_metrics_series_keys_and_groups(tmp_path):
    from rsp_d2.utils.errors import InputError
    from rsp_d2.visualization import load_run, plot_metrics, save_figure
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
    proc = call_main("tools/plot_metrics.py", run, "--output", tmp_path / "x.png")
    # 20 training and 4 evaluation lines come before it.
    assert_clear_error(proc, metrics, "line 25", "not JSON")
    assert not (tmp_path / "x.png").exists()


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
