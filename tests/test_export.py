"""ONNX (onnxruntime CPU) and TorchScript exports of RSP models equal PyTorch (opset 17), at the
traced input size and at another (height and width are dynamic).

Tolerances (fp32, odd input 157 x 229, padded inside the adapter to the size divisibility):
max |logits difference| <= 1e-4 of the logits' range, argmax agreement >= 99.99 %.
"""
import io
import os

import pytest
import torch
import torch.nn.functional as F
from support.tools import call_main, run_script

from detectron2.modeling import build_model

from rsp_d2.config import load_config
from rsp_d2.export import (OPSET, SemanticSegmentationAdapter, compare_outputs, export_model,
                           export_onnx, export_torchscript, run_onnx, second_size, verify_export)
from rsp_d2.layers import rse_attention
from rsp_d2.layers.rse_chunked import rse_attention_chunked

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "tests", "configs", "rsp4_R18_tiny.yaml")  # R18, 32 channels
REL_TOL, AGREEMENT = 1e-4, 0.9999
H, W = 157, 229  # no FPN stride divides them (primes): padding and cropping back are exported

# name -> overrides of the tiny RSP-4 config. Every RSP module adds hundreds of ONNX nodes per
# offset row, which the TorchScript-based exporter converts one by one: the variants whose
# property does not depend on the kernel size use k = 3 (9 offsets, not 49). A model whose config
# says impl "cpp" is exported by test_export_tool_onnx_and_torchscript.
_K3 = ["MODEL.SEM_SEG_HEAD.RSP.KERNEL_SIZE", "3"]
VARIANTS = {
    "rsp4": [],
    "rsp2": ["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
             "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['p2', 'p3', 'p4', 'p5']",
             "MODEL.SEM_SEG_HEAD.RSP.FUSION", "['rsp', 'rsp', 'sum']"],
    "k3_d3": _K3 + ["MODEL.SEM_SEG_HEAD.RSP.DILATION", "3"],
    "heads4": _K3 + ["MODEL.SEM_SEG_HEAD.RSP.NUM_HEADS", "4"],
    "no_pos": _K3 + ["MODEL.SEM_SEG_HEAD.RSP.POS_EMBEDDING", "False"],
    "impl_triton": _K3 + ["MODEL.SEM_SEG_HEAD.RSP.IMPL", "triton"],
}
_CPP = ["MODEL.SEM_SEG_HEAD.RSP.IMPL", "cpp"]


def _model(opts):
    cfg = load_config(TINY, ["MODEL.DEVICE", "cpu"] + opts)
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def _image(h=H, w=W):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)) * 255


def _assert_close(ref, out):
    r = compare_outputs(ref, out)
    assert r["rel_to_range"] <= REL_TOL and r["argmax_agreement"] >= AGREEMENT, r
    return r


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exports_equal_pytorch(variant):
    cfg, model = _model(VARIANTS[variant])
    adapter = SemanticSegmentationAdapter(model)
    # Triton does not run on the CPU: PyTorch's answer comes from the same weights (same seed)
    # with the default impl, the export from the model whose config says "triton".
    eager = model if variant != "impl_triton" else _model(_K3)[1]
    x = _image()
    with torch.no_grad():
        ref = SemanticSegmentationAdapter(eager)(x)
    assert ref.shape == (1, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, H, W)
    if variant in ("rsp4", "rsp2"):  # P2-P7 (padding to 128) and P2-P5 (to 32)
        # The adapter is SemanticSegmentor's inference, as one tensor.
        with torch.no_grad():
            d2 = eager([{"image": x[0], "height": H, "width": W}])[0]["sem_seg"]
        torch.testing.assert_close(ref[0], d2, rtol=1e-5, atol=1e-4)
    data = export_model(adapter, x, "onnx")
    assert onnx.load_from_string(data).opset_import[0].version == OPSET
    _assert_close(ref, run_onnx(data, (x,))[0])
    traced = export_model(adapter, x, "torchscript")
    with torch.no_grad():
        _assert_close(ref, torch.jit.load(io.BytesIO(traced))(x))
    # Height and width are dynamic: another size runs through the same graphs.
    y = second_size(x, adapter.size_divisibility)
    for fmt, exported in (("onnx", data), ("torchscript", traced)):
        check, = verify_export(SemanticSegmentationAdapter(eager), exported, fmt, [y])
        assert check["size"] == (H + adapter.size_divisibility, W + adapter.size_divisibility)
        assert check["rel_to_range"] <= REL_TOL and check["argmax_agreement"] >= AGREEMENT, check


class _Relation(torch.nn.Module):
    def __init__(self, impl, **kw):
        super().__init__()
        self.impl, self.kw = impl, kw

    def forward(self, q, k, v, pos):
        return rse_attention(q, k, v, pos, impl=self.impl, **self.kw)


@pytest.mark.parametrize("impl", ["auto", "chunked", "cpp", "reference", "export"])
@pytest.mark.parametrize("kw", [dict(kernel_size=7), dict(kernel_size=3, dilation=3, num_heads=2)])
def test_relation_exports_as_standard_ops(impl, kw):
    """Whatever `impl` says, the exported relation equals the reference, borders included."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 8, 11, 13, generator=g), torch.randn(1, 8, 11, 13, generator=g)
    v, pos = torch.randn(1, 16, 11, 13, generator=g), torch.randn(kw["kernel_size"] ** 2, 8, generator=g)
    ref = rse_attention(q, k, v, pos, impl="reference", **kw)
    data = export_onnx(_Relation(impl, **kw), (q, k, v, pos), input_names=("q", "k", "v", "pos"))
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert not ops & {"PythonOp", "ATen"}, ops
    torch.testing.assert_close(torch.from_numpy(run_onnx(data, (q, k, v, pos))[0]), ref,
                               rtol=1e-5, atol=1e-5)
    traced = torch.jit.load(io.BytesIO(export_torchscript(_Relation(impl, **kw), (q, k, v, pos))))
    torch.testing.assert_close(traced(q, k, v, pos), ref, rtol=1e-5, atol=1e-5)


def test_fixed_size_export_traces_the_tables_as_constants():
    """Without dynamic axes the relation's index tables are constants of the graph (no Range
    op rebuilding them at every call); with them, the graph computes them from the input's
    size and runs at another one. Both equal the reference."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 8, 11, 13, generator=g), torch.randn(1, 8, 11, 13, generator=g)
    v, pos = torch.randn(1, 16, 11, 13, generator=g), torch.randn(49, 8, generator=g)
    names = ("q", "k", "v", "pos")
    fixed = export_onnx(_Relation("export", kernel_size=7), (q, k, v, pos), input_names=names)
    axes = {n: {2: "h", 3: "w"} for n in names[:3]}
    dynamic = export_onnx(_Relation("export", kernel_size=7), (q, k, v, pos), input_names=names,
                          dynamic_axes=axes)
    ops = [{n.op_type for n in onnx.load_from_string(d).graph.node} for d in (fixed, dynamic)]
    assert "Range" not in ops[0] and "Range" in ops[1], ops
    ref = rse_attention(q, k, v, pos, kernel_size=7, impl="reference")
    for data in (fixed, dynamic):
        torch.testing.assert_close(torch.from_numpy(run_onnx(data, (q, k, v, pos))[0]), ref,
                                   rtol=1e-5, atol=1e-5)
    q2, k2, v2 = (t[:, :, :9, :10].contiguous() for t in (q, k, v))
    torch.testing.assert_close(torch.from_numpy(run_onnx(dynamic, (q2, k2, v2, pos))[0]),
                               rse_attention(q2, k2, v2, pos, kernel_size=7, impl="reference"),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant, size", [("rsp4", (37, 53)), ("rsp2", (20, 30))])
def test_one_tile_input_is_padded_to_two(variant, size):
    """An input within one size_divisibility tile (128 for P2-P7, 32 for P2-P5) would make the
    coarsest level 1 x 1, which a GroupNorm with one channel per group refuses: the adapter
    pads it with zeros to two tiles wide, as FPNP2P7 does in the model."""
    _, model = _model(VARIANTS[variant] + _K3)
    x, (h, w) = _image(*size), size
    d = model.backbone.size_divisibility
    with torch.no_grad():
        out = SemanticSegmentationAdapter(model)(x)
        padded = F.pad((x - model.pixel_mean.view(1, -1, 1, 1)) / model.pixel_std.view(1, -1, 1, 1),
                       (0, 2 * d - w, 0, d - h))
        ref = model.sem_seg_head(model.backbone(padded))[0][:, :, :h, :w]
        torch.testing.assert_close(out, ref)
        if variant == "rsp4":  # the model pads the same way itself
            d2 = model([{"image": x[0], "height": h, "width": w}])[0]["sem_seg"]
            torch.testing.assert_close(out[0], d2, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_export_tool_small_sample(tmp_path):
    _, model = _model(_K3)
    weights = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    r = call_main("tools/export_model.py", "--config-file", TINY, "--output", tmp_path / "m.onnx",
                  "--sample-size", "37", "53", "MODEL.WEIGHTS", weights, *_K3)
    assert r.returncode == 0, r.stderr
    assert "traced at (1, 3, 37, 53)" in r.stdout
    x = _image(37, 53)
    adapter = SemanticSegmentationAdapter(model)
    with torch.no_grad():
        _assert_close(adapter(x), run_onnx(str(tmp_path / "m.onnx"), (x,))[0])
        # traced at one tile (padded to two wide), it still pads a larger input only to its
        # size divisibility: three tiles wide here
        y = _image(200, 300)
        _assert_close(adapter(y), run_onnx(str(tmp_path / "m.onnx"), (y,))[0])


def test_unexportable_relation_refuses_to_trace():
    class Direct(torch.nn.Module):
        def forward(self, q, k, v):
            return rse_attention_chunked(q, k, v)

    q = torch.randn(1, 4, 6, 7)
    with pytest.raises(RuntimeError, match="cannot be traced or exported"):
        torch.jit.trace(Direct(), (q, q, torch.randn(1, 8, 6, 7)))


def _tool(*args):
    return run_script("tools/export_model.py", *args)


@pytest.mark.slow
def test_export_tool_onnx_and_torchscript(tmp_path):
    """The README's commands: a checkpoint of a model with impl cpp in its config, exported
    from a sample image, and the files run by onnxruntime / torch.jit.load."""
    import cv2
    import numpy as np

    cfg, model = _model(VARIANTS["rsp2"] + _CPP)
    weights = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    image = (np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), image)
    x = torch.as_tensor(image.transpose(2, 0, 1).astype("float32"))[None]  # BGR, as read
    with torch.no_grad():
        ref = SemanticSegmentationAdapter(model)(x)
    common = ["--config-file", TINY, "--sample-image", str(tmp_path / "frame.png")]
    opts = ["MODEL.WEIGHTS", str(weights)] + VARIANTS["rsp2"] + _CPP
    r = _tool(*common, "--format", "onnx", "--output", str(tmp_path / "m.onnx"), *opts)
    assert r.returncode == 0, r.stderr
    assert "opset 17" in r.stdout
    _assert_close(ref, run_onnx(str(tmp_path / "m.onnx"), (x,))[0])
    # the entry point ran above; this one in-process
    r = call_main("tools/export_model.py", *common, "--format", "torchscript", "--output",
                  tmp_path / "m.ts", *opts)
    assert r.returncode == 0, r.stderr
    with torch.no_grad():
        _assert_close(ref, torch.jit.load(str(tmp_path / "m.ts"))(x))


@pytest.mark.slow
@pytest.mark.parametrize("args, match", [
    (["--format", "torchscript", "--export-method", "scripting"], "scripting is not supported"),
    (["--sample-image", "missing.png"], "image not found: missing.png"),
    (["MODEL.WEIGHTS", "missing.pth"], "checkpoint not found: missing.pth"),
    (["MODEL.NO_SUCH_KEY", "1"], "unknown config key MODEL.NO_SUCH_KEY"),
])
def test_export_tool_user_errors(tmp_path, args, match):
    r = call_main("tools/export_model.py", "--config-file", TINY, "--output", tmp_path / "m.onnx",
                  "--sample-size", "64", "64", *args)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and match in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "m.onnx").exists()


def test_only_analysis_traces_record_the_per_offset_products():
    """fvcore's tracer (a graph to measure) records the relation as one matrix product per
    pixel and offset, whose multiply-adds are the definition's k*k*(M + C) per pixel;
    torch.jit.trace (a graph to deploy) keeps the halo form's three matrix products."""
    from fvcore.nn import FlopCountAnalysis

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 8, 11, 13, generator=g), torch.randn(1, 8, 11, 13, generator=g)
    v, pos = torch.randn(1, 16, 11, 13, generator=g), torch.randn(49, 8, generator=g)
    relation = _Relation("auto", kernel_size=7)
    counts = FlopCountAnalysis(relation, (q, k, v, pos)).unsupported_ops_warnings(False)
    assert counts.by_operator() == {"matmul": 11 * 13 * 49 * (8 + 16)}
    traced = torch.jit.trace(relation, (q, k, v, pos))
    kinds = [n.kind() for n in traced.inlined_graph.nodes()]
    assert kinds.count("aten::matmul") == 3, kinds
    torch.testing.assert_close(traced(q, k, v, pos),
                               rse_attention(q, k, v, pos, kernel_size=7, impl="reference"))
