"""The paper's data pipeline in Detectron2's own scripts (rsp_d2/engine/recipe.py): a stock
``DefaultTrainer`` maps with Detectron2's DatasetMapper and says so at the first training step;
``RSPDataMixin`` (or ``build_recipe_train_loader``) trains with the mapper the config names."""
import ast
import logging

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.data.datasets.cityscapes import load_cityscapes_semantic
from detectron2.engine import DefaultTrainer
from detectron2.modeling import build_model

from rsp_d2 import load_config
from rsp_d2.data.mapper import RSPSemanticDatasetMapper
from rsp_d2.engine import RSPDataMixin, build_recipe_train_loader
from support.tools import detectron2_tool, run_script
from support.train_net import SEMANTIC_TINY

WARNING = "but this run's training loader is not rsp_d2's"
STOCK_MAPPER = "[DatasetMapper] Augmentations used in training"


def _train_step(model):
    """One training forward of `model` on a random 128 x 256 image."""
    model.train()
    batch = [{"image": torch.randint(0, 255, (3, 128, 256), dtype=torch.uint8),
              "sem_seg": torch.randint(0, 19, (128, 256))}]
    return model(batch)


def _tiny(*opts):
    return load_config(SEMANTIC_TINY, ["MODEL.DEVICE", "cpu", *opts])


def test_head_warns_once_when_the_recipe_is_not_confirmed(caplog):
    model = build_model(_tiny())
    with caplog.at_level(logging.WARNING, logger="rsp_d2"):
        _train_step(model)
        _train_step(model)
    warnings = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "'rsp_semantic'" in warnings[0] and "RSPDataMixin" in warnings[0]


@pytest.fixture(scope="module")
def train_split(synthetic_root):
    """The synthetic Cityscapes train split under a name of this module: Detectron2 bound its
    builtin names to $DETECTRON2_DATASETS when this process imported it."""
    name = "test_stock_scripts_cityscapes_train"
    city = synthetic_root / "cityscapes"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: load_cityscapes_semantic(
            str(city / "leftImg8bit" / "train"), str(city / "gtFine" / "train")))
    return name


def test_no_warning_with_detectron2s_mapper_or_a_confirmed_loader(train_split, caplog):
    stock = build_model(_tiny("INPUT.DATASET_MAPPER_NAME", "default"))
    confirmed = build_model(_tiny())
    loader = build_recipe_train_loader(_tiny("DATASETS.TRAIN", (train_split,)), confirmed)
    assert next(iter(loader))[0]["image"].shape[-2:] == (128, 256)
    with caplog.at_level(logging.WARNING, logger="rsp_d2"):
        _train_step(stock)
        _train_step(confirmed)
    assert WARNING not in caplog.text


def test_mixin_trains_with_the_configured_mapper(train_split, tmp_path, monkeypatch):
    """A DefaultTrainer with the mixin: its training stream comes through the recipe's mapper,
    and the heads are told."""
    built = []
    original = RSPSemanticDatasetMapper.__init__

    def spy(self, *args, **kwargs):
        built.append(kwargs.get("is_train"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(RSPSemanticDatasetMapper, "__init__", spy)

    class Trainer(RSPDataMixin, DefaultTrainer):
        pass

    trainer = Trainer(_tiny("DATASETS.TRAIN", (train_split,), "OUTPUT_DIR", str(tmp_path)))
    assert built == [True]
    assert trainer.model.sem_seg_head._data_recipe_checked
    batch = next(iter(trainer.data_loader))
    assert batch[0]["image"].shape[-2:] == (128, 256)  # the recipe's crop, after its resize


def _stock_train_net(dest, with_mixin):
    """Detectron2's tools/train_net.py with the README's drop-in lines (and the mixin)."""
    path = detectron2_tool("train_net.py", dest)
    text = path.read_text()
    edits = [("from detectron2.config import get_cfg\n",
              "from detectron2.config import get_cfg\nimport rsp_d2\nimport rsp_d2.engine\n"),
             ("    cfg = get_cfg()\n", "    cfg = get_cfg()\n    rsp_d2.add_rsp_config(cfg)\n")]
    if with_mixin:
        edits.append(("class Trainer(DefaultTrainer):",
                      "class Trainer(rsp_d2.engine.RSPDataMixin, DefaultTrainer):"))
    for old, new in edits:
        assert text.count(old) == 1, f"Detectron2's train_net.py changed: {old!r}"
        text = text.replace(old, new)
    script = dest / ("train_net_mixin.py" if with_mixin else "train_net_stock.py")
    script.write_text(text)
    return script


@pytest.mark.slow
@pytest.mark.parametrize("with_mixin", [False, True], ids=["stock", "mixin"])
def test_detectron2_train_net(synthetic_root, tmp_path, with_mixin):
    """Detectron2's own tools/train_net.py on the Cityscapes recipe's demo config, 2 iterations:
    stock, it trains with DatasetMapper and warns; with the mixin, it does not use DatasetMapper
    and does not warn."""
    script = _stock_train_net(tmp_path, with_mixin)
    proc = run_script(script, "--config-file", SEMANTIC_TINY, "SOLVER.MAX_ITER", "2",
                      "DATASETS.TEST", "()", "OUTPUT_DIR", tmp_path / "out",
                      data_root=synthetic_root)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert (tmp_path / "out" / "model_final.pth").is_file()
    assert (STOCK_MAPPER in proc.stdout) is not with_mixin, proc.stdout[-5000:]
    assert (WARNING in proc.stdout) is not with_mixin, proc.stdout[-5000:]


def _relation_macs(cfg, height, width):
    """The definition's multiply-adds of every relation call of cfg's model on one
    height x width image: k*k*(M + C) per pixel of each call (Eq. 1-3)."""
    from unittest import mock

    from rsp_d2.layers import rse_extractor

    macs, real = [], rse_extractor.run_rse

    def spy(q, k, v, pos, window, *args, **kwargs):
        n, m, h, w = q.shape
        macs.append(n * h * w * window.kernel_size ** 2 * (m + v.shape[1]))
        return real(q, k, v, pos, window, *args, **kwargs)

    model = build_model(cfg).eval()
    with mock.patch.object(rse_extractor, "run_rse", spy), torch.no_grad():
        model([{"image": torch.rand(3, height, width) * 255}])
    return sum(macs)


@pytest.mark.slow
def test_detectron2_analyze_model_counts_the_relation_as_defined(synthetic_root, tmp_path):
    """Detectron2's own tools/analyze_model.py --tasks flop, with the README's drop-in lines, on
    the demo model: its matmul count (in a semantic model only the relation's) is the
    definition's k*k*(M + C) multiply-adds per pixel of every relation call, although the
    config's relation (impl auto: cpp) cannot be traced and its trace runs impl="export"."""
    path = detectron2_tool("analyze_model.py", tmp_path)
    text = path.read_text()
    for old, new in [("from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate\n",
                      "from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate\n"
                      "import rsp_d2\n"),
                     ("        cfg = get_cfg()\n",
                      "        cfg = get_cfg()\n        rsp_d2.add_rsp_config(cfg)\n")]:
        assert text.count(old) == 1, f"Detectron2's analyze_model.py changed: {old!r}"
        text = text.replace(old, new)
    script = tmp_path / "analyze_model_rsp.py"
    script.write_text(text)
    proc = run_script(script, "--tasks", "flop", "-n", "1", "--config-file", SEMANTIC_TINY,
                      "MODEL.DEVICE", "cpu", data_root=synthetic_root)
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = proc.stdout
    per_op = log.split("Average GFlops for each type of operators:")[1].splitlines()[1]
    counted = dict(ast.literal_eval(per_op))  # [(operator, GFlops), ...], as it logs them
    # the test mapper resizes the synthetic 256x512 val images to 128x256
    expected = _relation_macs(_tiny(), 128, 256)
    assert round(counted["matmul"] * 1e9) == expected, (counted, expected)
