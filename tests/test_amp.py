"""SOLVER.AMP.ENABLED on torch.amp (rsp_d2/engine/amp.py): bfloat16 autocast on the CPU, in a
unit step and through train_net.py."""
import json
import math

import pytest
import torch

from detectron2.utils.events import EventStorage

from rsp_d2.engine.amp import TorchAMPTrainer, amp_precision
from support.train_net import SEMANTIC_TINY, metrics, train_net


class _Tiny(torch.nn.Module):
    """A linear model whose loss dict also records the dtype autocast gave its output."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.seen_dtypes = []

    def forward(self, batch):
        out = self.linear(batch)
        self.seen_dtypes.append(out.dtype)
        return {"loss_tiny": out.float().pow(2).mean()}


def test_cpu_step_runs_in_bfloat16_and_updates_weights():
    torch.manual_seed(0)
    model = _Tiny()
    data = iter([torch.randn(8, 4) for _ in range(3)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = TorchAMPTrainer(model, data, optimizer)
    assert trainer.precision == amp_precision("cpu") == torch.bfloat16
    assert not trainer.grad_scaler.is_enabled()  # bfloat16 needs no loss scaling
    before = model.linear.weight.detach().clone()
    with EventStorage(0) as storage:
        for it in range(3):
            trainer.iter = it
            trainer.run_step()
            storage.step()
    assert model.seen_dtypes == [torch.bfloat16] * 3
    assert not torch.equal(model.linear.weight, before)
    assert model.linear.weight.dtype == torch.float32  # master weights stay float32
    # checkpoints keep the scaler's state, as Detectron2's AMPTrainer does
    state = trainer.state_dict()
    assert "grad_scaler" in state
    trainer.load_state_dict(state)


def test_cuda_precision_is_detectron2s():
    assert amp_precision("cuda") == torch.float16


@pytest.mark.slow
def test_train_net_amp_on_cpu(synthetic_root, tmp_path):
    proc = train_net("--config-file", SEMANTIC_TINY, "OUTPUT_DIR", tmp_path, "SOLVER.AMP.ENABLED",
                     "True", "SOLVER.MAX_ITER", "3", data_root=synthetic_root)
    assert "AMP training on cpu in torch.bfloat16 (torch.amp, gradient scaler off)" in proc.stdout
    assert "torch.cuda.amp" not in proc.stdout  # no deprecated API, no CUDA assertion
    losses = [r["total_loss"] for r in metrics(tmp_path) if "total_loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


@pytest.mark.parametrize("enabled", [False, True])
def test_inference_autocast_follows_test_amp(enabled):
    """TEST.AMP.ENABLED evaluates under autocast: the tiny RSP-4 model's semantic logits come
    out in bfloat16 on the CPU; without it, in float32."""
    from detectron2.modeling import build_model

    from rsp_d2 import load_config
    from rsp_d2.engine.amp import inference_autocast

    cfg = load_config(SEMANTIC_TINY, ["MODEL.DEVICE", "cpu", "TEST.AMP.ENABLED", str(enabled)])
    model = build_model(cfg).eval()
    with torch.no_grad(), inference_autocast(cfg, model):
        out = model([{"image": torch.rand(3, 128, 256) * 255}])[0]["sem_seg"]
    assert out.dtype == (torch.bfloat16 if enabled else torch.float32)
    assert torch.isfinite(out.float()).all()


@pytest.mark.slow
def test_eval_only_under_autocast_scores_the_same_weights(semantic_run, synthetic_root, tmp_path):
    """train_net.py --eval-only with TEST.AMP.ENABLED on the shared run's weights: evaluated in
    bfloat16, with both evaluators, close to the float32 evaluation of the same weights."""
    out, _ = semantic_run
    fp32 = json.loads((out / "inference" / "results.json").read_text())
    proc = train_net("--config-file", SEMANTIC_TINY, "--eval-only", "MODEL.WEIGHTS",
                     out / "model_final.pth", "OUTPUT_DIR", tmp_path, "TEST.AMP.ENABLED", "True",
                     data_root=synthetic_root)
    assert "Evaluating under autocast to torch.bfloat16 on cpu" in proc.stdout
    bf16 = json.loads((tmp_path / "inference" / "results.json").read_text())
    assert set(bf16) == set(fp32)
    assert abs(bf16["sem_seg"]["mIoU"] - fp32["sem_seg"]["mIoU"]) <= 2.0, (bf16, fp32)
