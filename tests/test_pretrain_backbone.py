"""tools/pretrain_backbone.py: a backbone pretrained on a synthetic set of its own seed, cached
as a Detectron2 checkpoint that every demo variant (Q2-Q5 and P2-P7) starts from; its data
never overlap the benchmark's val images."""
import importlib.util
import os
import shutil

import pytest
import torch

from rsp_d2.config import load_config
from rsp_d2.engine import load_model
from rsp_d2.utils.errors import InputError
from support.tools import REPO, run_script

TOOL = os.path.join(REPO, "tools", "pretrain_backbone.py")
DEMO = os.path.join(REPO, "configs", "synthetic", "rsp4_R18.yaml")
Q2_Q5 = ["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
         "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['p2','p3','p4','p5']",
         "MODEL.SEM_SEG_HEAD.RSP.FUSION", "['sum','sum','sum']"]


def _tool_module():
    spec = importlib.util.spec_from_file_location("pretrain_backbone", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_pretrained_backbone_is_cached_and_starts_every_variant(synthetic_root, tmp_path):
    out, data = tmp_path / "pretrain", tmp_path / "data"
    args = ["--output", out, "--data-root", data, "--benchmark-root", synthetic_root,
            "--num-train", 4, "--iters", 2, "--seed", 7]
    proc = run_script(TOOL, *args)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "none of the 8 benchmark val images is a pretraining image" in proc.stdout
    cache = out / "R18_synthetic_seed7.pth"
    saved = torch.load(cache, weights_only=True)
    assert saved["pretraining"] == {"seed": 7, "num_train": 4, "iters": 2}
    assert saved["model"] and all(k.startswith("backbone.bottom_up.") for k in saved["model"])
    for opts in ([], Q2_Q5):  # RSP-4 on P2-P7 and the Q2-Q5 heads
        model = load_model(load_config(DEMO, opts + ["MODEL.WEIGHTS", str(cache)]), strict=False)
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved["model"].items())
    again = run_script(TOOL, *args)  # cached: nothing trained
    assert again.returncode == 0 and again.stdout.strip() == f"cached: {cache}"
    # a cache made with other settings is not handed out as this pretraining
    other = run_script(TOOL, *args[:-3], 3, "--seed", 7)
    assert other.returncode == 2 and f"{cache}: cached from a pretraining with" in other.stderr
    assert "'iters': 2}, asked for {'seed': 7, 'num_train': 4, 'iters': 3}" in other.stderr


def test_overlap_with_the_benchmark_is_refused(synthetic_root, tmp_path):
    tool = _tool_module()
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root / "cityscapes" / "leftImg8bit",
                    copy / "cityscapes" / "leftImg8bit")
    with pytest.raises(InputError, match="pretraining images are benchmark val images"):
        tool.check_disjoint(str(copy), str(synthetic_root))
