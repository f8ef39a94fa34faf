"""The LazyConfig configs (configs/lazy/): each builds the model of its yaml twin (same path under
configs/, .yaml) with the same recipe, Detectron2's own tools/lazyconfig_train_net.py trains and
evaluates one, and the README's LazyConfig snippet works as written."""
import dataclasses
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, ListConfig

from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler

from rsp_d2 import load_config
from rsp_d2.data.mapper import build_semantic_augmentations
from support.tools import REPO, detectron2_tool, run_script

LAZY = Path(REPO) / "configs" / "lazy"
# configs/lazy/<name>.py is the twin of configs/<name>.yaml
TWINS = ["cityscapes/baseline_R50", "cityscapes/rsp2_R50", "cityscapes/rsp4_R50",
         "cityscapes/rsp2_D_R101", "cityscapes/rsp4_D_R101", "coco/panoptic_rsp2", "coco/panoptic_rsp4",
         "synthetic/rsp4_R18"]
# The head's fusions, finest pair first (their registration order), for the models' names
RSP2 = ["SumFusion", "RelationalSemanticsPropagator", "RelationalSemanticsPropagator"]
RSP4 = ["SumFusion"] + ["RelationalSemanticsPropagator"] * 4
FUSIONS = {"cityscapes/baseline_R50": ["SumFusion"] * 3, "cityscapes/rsp2_R50": RSP2,
           "cityscapes/rsp4_R50": RSP4, "cityscapes/rsp2_D_R101": RSP2,
           "cityscapes/rsp4_D_R101": RSP4, "coco/panoptic_rsp2": RSP2, "coco/panoptic_rsp4": RSP4,
           "synthetic/rsp4_R18": RSP4}


def _yaml_cfg(name):
    return load_config(os.path.join(REPO, "configs", f"{name}.yaml"), ["MODEL.DEVICE", "cpu"])


def _lazy_cfg(name):
    return LazyConfig.load(str(LAZY / f"{name}.py"))


def _plain(value):
    """Config values as plain Python: OmegaConf containers and tuples as lists (an instantiated
    LazyConfig passes ListConfigs where yacs passes tuples)."""
    if isinstance(value, (ListConfig, list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (DictConfig, dict)):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _settings(module):
    """A module's public non-module attributes of plain types or value records (a dataclass,
    a named tuple): what its constructor was given beyond the shapes (the relation's window,
    loss weight, ignore value, fusion names, ...)."""
    def plain(v):
        if isinstance(v, (ListConfig, list)) or type(v) is tuple:
            return all(isinstance(x, (int, float, str, bool)) for x in v)
        return isinstance(v, (int, float, str, bool, type(None)))

    def record(v):
        return dataclasses.is_dataclass(v) or isinstance(v, tuple) and hasattr(v, "_fields")

    return {k: repr(v) if record(v) else _plain(v) for k, v in vars(module).items()
            if not k.startswith("_") and k != "training" and (plain(v) or record(v))}


def _describe(model):
    return {
        "state_dict": {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()},
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        "types": {n: type(m).__qualname__ for n, m in model.named_modules()},
        # conv strides, dilations, norms, FrozenBN vs BN, ... of every module
        "repr": repr(model).splitlines(),
        # Detectron2's R-CNN parts are its own configs' business (its yaml and LazyConfig
        # defaults differ only in form there, e.g. a loss weight given for one key or both)
        "settings": {n: _settings(m) for n, m in model.named_modules()
                     if not n.startswith(("proposal_generator", "roi_heads"))},
        "pixel": [model.pixel_mean.flatten().tolist(), model.pixel_std.flatten().tolist()],
    }


def test_every_lazy_config_has_a_yaml_twin():
    configs = sorted(str(p.relative_to(LAZY).with_suffix("")) for p in LAZY.rglob("*.py")
                     if "common" not in p.relative_to(LAZY).parts)
    assert configs == sorted(TWINS)
    for name in configs:
        assert (Path(REPO) / "configs" / f"{name}.yaml").is_file(), name


@pytest.mark.parametrize("name", TWINS)
def test_lazy_model_is_the_yaml_model(name):
    torch.manual_seed(0)
    ours = instantiate(_lazy_cfg(name).model)
    theirs = build_model(_yaml_cfg(name))
    a, b = _describe(ours), _describe(theirs)
    for key in a:
        assert a[key] == b[key], f"{name}: {key} differs"
    fusions = [type(f).__name__ for f in ours.sem_seg_head.fusions.values()]
    assert fusions == [type(f).__name__ for f in theirs.sem_seg_head.fusions.values()]
    assert fusions == FUSIONS[name]


def _lr_multiplier(lazy, yaml_cfg):
    """The lr multiplier of both at iterations spread over training and at each boundary."""
    max_iter = yaml_cfg.SOLVER.MAX_ITER
    assert lazy.train.max_iter == max_iter
    theirs = build_lr_scheduler(yaml_cfg, torch.optim.SGD([torch.zeros(1, requires_grad=True)],
                                                            lr=1.0))._multiplier
    ours = instantiate(lazy.lr_multiplier)
    edges = [yaml_cfg.SOLVER.WARMUP_ITERS, *yaml_cfg.SOLVER.STEPS]
    its = sorted({*range(0, max_iter, max(1, max_iter // 500)),
                  *(e + d for e in edges for d in (-1, 0, 1)), max_iter - 1})
    return [ours(i / max_iter) for i in its], [theirs(i / max_iter) for i in its]


def _augmentations(augs):
    """(class, settings) of each; a Transform given as an augmentation is compared as itself
    (AugmentationList wraps it in a _TransformToAug)."""
    augs = [getattr(a, "tfm", a) for a in augs]
    return [(type(a).__name__, _settings(a)) for a in augs]


@pytest.mark.parametrize("name", [n for n in TWINS if not n.startswith("coco/")])
def test_cityscapes_lazy_recipe_is_the_yaml_recipe(name):
    """Data, optimizer, schedule and run settings of Base-RSP-Cityscapes.yaml (the demo: its
    scaled-down recipe)."""
    lazy, cfg = _lazy_cfg(name), _yaml_cfg(name)
    for split, is_train, names in (("train", True, cfg.DATASETS.TRAIN),
                                   ("test", False, cfg.DATASETS.TEST)):
        loader = lazy.dataloader[split]
        assert [loader.dataset.names] == list(names)
        assert loader.num_workers == cfg.DATALOADER.NUM_WORKERS
        mapper = instantiate(loader.mapper)
        assert _augmentations(mapper.augmentations.augs) == \
            _augmentations(build_semantic_augmentations(cfg, is_train))
        assert (mapper.is_train, mapper.image_format, mapper.ignore_label, mapper.num_classes) == \
            (is_train, cfg.INPUT.FORMAT, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
             cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    assert lazy.dataloader.train.total_batch_size == cfg.SOLVER.IMS_PER_BATCH
    assert [e._target_.__name__ for e in lazy.dataloader.evaluator] == \
        ["CityscapesOfficialSemSegEvaluator", "SemSegEvaluator"]  # what train_net.py runs

    opt = lazy.optimizer
    assert (opt.lr, opt.momentum, opt.weight_decay, opt.params.weight_decay_norm) == \
        (cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY,
         cfg.SOLVER.WEIGHT_DECAY_NORM)
    ours, theirs = _lr_multiplier(lazy, cfg)
    assert ours == pytest.approx(theirs, rel=1e-9)
    train = lazy.train
    assert (train.checkpointer.period, train.eval_period, train.init_checkpoint) == \
        (cfg.SOLVER.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD, cfg.MODEL.WEIGHTS)
    if name.startswith("demo/"):
        assert (train.device, train.seed) == (cfg.MODEL.DEVICE, cfg.SEED)


@pytest.mark.parametrize("name", ["coco/panoptic_rsp2", "coco/panoptic_rsp4"])
def test_panoptic_lazy_recipe_is_the_yaml_recipe(name):
    """Detectron2's Panoptic FPN R50 1x LazyConfig recipe is Base-RSP-COCO-Panoptic.yaml's."""
    lazy, cfg = _lazy_cfg(name), _yaml_cfg(name)
    train = lazy.dataloader.train
    assert ([train.dataset.names], [lazy.dataloader.test.dataset.names]) == \
        (list(cfg.DATASETS.TRAIN), list(cfg.DATASETS.TEST))
    assert train.dataset.filter_empty == cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    assert train.total_batch_size == cfg.SOLVER.IMS_PER_BATCH
    assert list(train.mapper.augmentations[0].short_edge_length) == list(cfg.INPUT.MIN_SIZE_TRAIN)
    assert lazy.optimizer.lr == cfg.SOLVER.BASE_LR
    ours, theirs = _lr_multiplier(lazy, cfg)
    assert ours == pytest.approx(theirs, rel=1e-9)
    assert lazy.train.init_checkpoint == cfg.MODEL.WEIGHTS
    assert [e._target_.__name__ for e in lazy.dataloader.evaluator] == \
        ["COCOEvaluator", "SemSegEvaluator", "PairedCOCOPanopticEvaluator"]


def test_readme_lazyconfig_snippet_builds_an_rsp_panoptic_fpn():
    text = open(os.path.join(REPO, "README.md")).read()
    m = re.search(r"<!-- lazyconfig -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README has no python block after <!-- lazyconfig -->"
    scope = {}
    exec(m.group(1), scope)
    model = instantiate(scope["model"]).eval()
    assert type(model.sem_seg_head).__name__ == "RSPHead"
    assert [type(f).__name__ for f in model.sem_seg_head.fusions.values()] == RSP2
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 200, 300) * 255}])[0]
    assert out["sem_seg"].shape == (54, 200, 300) and "panoptic_seg" in out


# The demo config at test size: ResNet-18-FPN with 32 channels, 128 x 256 crops, batch 2.
TINY = ["train.max_iter=3", "train.log_period=1", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "model.backbone.out_channels=32", "model.sem_seg_head.conv_dims=32",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[128,160]",
        "dataloader.train.mapper.augmentations.0.max_size=320",
        "dataloader.test.mapper.augmentations.0.short_edge_length=128",
        "dataloader.test.mapper.augmentations.0.max_size=256"]


def _lazy_train(config, overrides, data_root, tmp_path):
    """(script, output folder, process, metrics.json records) of Detectron2's own
    lazyconfig_train_net.py, unchanged, training `config` with `overrides`."""
    script = detectron2_tool("lazyconfig_train_net.py", tmp_path)
    out = tmp_path / "out"
    train = run_script(script, "--config-file", config, f"train.output_dir={out}", *overrides,
                       data_root=data_root)
    assert train.returncode == 0, train.stdout[-5000:]
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return script, out, train, records


def _final_metrics(log):
    """{task: {metric: value}} of the copypaste lines print_csv_format writes (the last ones)."""
    lines = re.findall(r"copypaste: (.*)", log)
    out = {}
    for i, line in enumerate(lines):
        if line.startswith("Task: "):
            out[line[len("Task: "):]] = dict(zip(lines[i + 1].split(","),
                                                 map(float, lines[i + 2].split(","))))
    return out


@pytest.mark.slow
def test_lazyconfig_train_net_trains_and_evaluates_the_demo(synthetic_root, tmp_path):
    """Detectron2's own LazyConfig training script, unchanged, on configs/lazy/synthetic/rsp4_R18.py: 3
    iterations on the synthetic Cityscapes on the CPU, the final evaluation with both
    evaluators, then --eval-only from the config.yaml and model_final.pth it saved."""
    script, out, train, records = _lazy_train("configs/lazy/synthetic/rsp4_R18.py", TINY,
                                              synthetic_root, tmp_path)
    # one loss term: recorded as total_loss or as loss_sem_seg, by Detectron2's version
    losses = [r.get("total_loss", r.get("loss_sem_seg")) for r in records
              if "total_loss" in r or "loss_sem_seg" in r]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses), records
    assert (out / "model_final.pth").is_file()
    trained = _final_metrics(train.stdout)
    assert set(trained) == {"cityscapes_sem_seg", "sem_seg"}, train.stdout[-3000:]
    assert 0 <= trained["sem_seg"]["mIoU"] <= 100

    # The saved config names rsp_d2's classes by their import paths: loading it needs nothing
    # but Detectron2, and it evaluates the trained weights to the same numbers.
    evaluate = run_script(script, "--config-file", out / "config.yaml", "--eval-only",
                          f"train.init_checkpoint={out / 'model_final.pth'}",
                          data_root=synthetic_root)
    assert evaluate.returncode == 0, evaluate.stdout[-5000:]
    again = _final_metrics(evaluate.stdout)
    assert again.keys() == trained.keys()
    for task in trained:
        assert again[task] == pytest.approx(trained[task], abs=1e-3), task


# The RSP-4 Panoptic FPN (ResNet-50, as configured) on 128-pixel images, batch 2, 2 iterations.
PANOPTIC_TINY = ["train.max_iter=2", "train.log_period=1", "train.device=cpu",
                 "train.init_checkpoint=", "dataloader.train.total_batch_size=2",
                 "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
                 "model.sem_seg_head.conv_dims=32",
                 "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
                 "dataloader.train.mapper.augmentations.0.max_size=256",
                 "dataloader.test.mapper.augmentations.0.short_edge_length=128",
                 "dataloader.test.mapper.augmentations.0.max_size=256"]


@pytest.mark.slow
def test_lazyconfig_train_net_trains_and_evaluates_the_rsp4_panoptic_fpn(synthetic_root, tmp_path):
    """Detectron2's own LazyConfig training script, unchanged, on
    configs/lazy/coco/panoptic_rsp4.py (RSP-4 on P2-P7 in a Panoptic FPN): 2 iterations on the
    synthetic COCO panoptic on the CPU with finite losses of both branches, then the final
    evaluation with the config's evaluators (boxes, masks, semantic, PQ)."""
    _, out, train, records = _lazy_train("configs/lazy/coco/panoptic_rsp4.py", PANOPTIC_TINY,
                                         synthetic_root, tmp_path)
    losses = [r for r in records if "loss_sem_seg" in r]
    assert len(losses) == 2, records
    for r in losses:
        for key in ("loss_sem_seg", "loss_cls", "loss_mask", "loss_rpn_cls"):
            assert math.isfinite(r[key]), (key, r)
    assert (out / "model_final.pth").is_file()
    metrics = _final_metrics(train.stdout)
    assert {"bbox", "segm", "sem_seg", "panoptic_seg"} <= set(metrics), train.stdout[-3000:]
    assert 0 <= metrics["panoptic_seg"]["PQ"] <= 100
