"""RSPHead, the P2-P7 backbone and the configs, inside Detectron2's meta-architectures."""
import glob
import os
import re

import pytest
import torch
import torch.nn.functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model, build_sem_seg_head
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from rsp_d2.layers import FUSIONS, FusionSettings, build_fusion, fusion_has_relation
from rsp_d2.layers.group_norm import group_norm_relu_
from rsp_d2.layers.row_bands import conv2d_rows
from rsp_d2.modeling import RSPHead, rsp_head
from rsp_d2.analysis.paper_tables import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"),
                                                recursive=True)
    if not os.path.basename(p).startswith("Base-") and "/synthetic/" not in p)


def small_cfg(path, **overrides):
    """`path`'s config with a ResNet-18 trunk: the head under test is unchanged, the test fast."""
    cfg = load_config(os.path.join(REPO, path)).clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NUM_GROUPS = 1  # ResNet-18 has no grouped (ResNeXt) variant
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 64
    for k, v in overrides.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return cfg


def _distinct_models():
    """{first config: every config} grouped by the model the tests below build from them (the
    whole MODEL node after :func:`small_cfg`): e.g. R50 and R101 rows of one head coincide."""
    groups = {}
    for path in CONFIGS:
        groups.setdefault(small_cfg(path).MODEL.dump(), []).append(path)
    return {paths[0]: paths for paths in groups.values()}


MODELS = _distinct_models()
# An image size that no FPN stride divides (both primes): padding and cropping back are tested.
ODD_H, ODD_W = 157, 229


def _batch(h, w, num_classes, with_instances):
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), generator=g).float()
    sem_seg = torch.randint(0, num_classes, (h, w), generator=g)
    sem_seg[:10] = 255  # ignored rows
    item = {"image": image, "height": h, "width": w, "sem_seg": sem_seg}
    if with_instances:
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor([[20.0, 30.0, 150.0, 140.0]]))
        inst.gt_classes = torch.tensor([0])
        masks = torch.zeros(1, h, w, dtype=torch.bool)
        masks[:, 30:140, 20:150] = True
        inst.gt_masks = BitMasks(masks)
        item["instances"] = inst
    return item


def test_configs_found():
    assert len(CONFIGS) >= 35, CONFIGS
    assert "configs/coco/panoptic_rsp4.yaml" in CONFIGS


def test_first_command_config_is_the_coco_rsp4_config():
    """configs/panoptic_rsp4.yaml (the project's first command) stays the COCO RSP-4 config."""
    alias, coco = (load_config(os.path.join(REPO, "configs", p))
                   for p in ("panoptic_rsp4.yaml", "coco/panoptic_rsp4.yaml"))
    assert alias.dump() == coco.dump()
    assert coco.MODEL.SEM_SEG_HEAD.NAME == "RSPHead" and "p7" in coco.MODEL.SEM_SEG_HEAD.IN_FEATURES


def test_every_config_maps_to_a_tested_model():
    assert sorted(p for paths in MODELS.values() for p in paths) == CONFIGS
    assert len(MODELS) >= 26  # the paper's heads differ: only depth / duplicates coincide
    for first, paths in MODELS.items():
        assert all(small_cfg(p).MODEL == small_cfg(first).MODEL for p in paths)
    r50_r101 = {"configs/cityscapes/baseline_R50.yaml", "configs/cityscapes/baseline_R101.yaml"}
    assert any(r50_r101 <= set(paths) for paths in MODELS.values())


@pytest.mark.parametrize("path", sorted(MODELS))
def test_config_trains_and_infers_on_odd_size(path):
    torch.manual_seed(0)
    cfg = small_cfg(path)
    model = build_model(cfg)
    panoptic = cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    item = _batch(ODD_H, ODD_W, num_classes, panoptic)
    model.train()
    with EventStorage(0):
        losses = model([item])
    loss = losses["loss_sem_seg"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    head = model.sem_seg_head
    grads = {n: p.grad for n, p in head.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), path
    if isinstance(head, RSPHead):
        fusions = cfg.MODEL.SEM_SEG_HEAD.RSP.FUSION
        relation = [n for n in grads if ".rse." in n]
        assert (len(relation) > 0) == any(fusion_has_relation(f) for f in fusions)
        assert all(grads[n].abs().sum() > 0 for n in relation if not n.endswith(".pos.bias"))
    model.eval()
    with torch.no_grad():
        out = model([{"image": item["image"], "height": ODD_H, "width": ODD_W}])[0]
    assert out["sem_seg"].shape == (num_classes, ODD_H, ODD_W)
    assert torch.isfinite(out["sem_seg"]).all()
    if panoptic:
        assert "panoptic_seg" in out and "instances" in out


def _features(shapes, h, w, c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(1, c, -(-h // s.stride), -(-w // s.stride), generator=g)
            for n, s in shapes.items()}


def _shapes(names, c=8):
    return {n: ShapeSpec(channels=c, stride=2 ** int(n[1:])) for n in names}


def test_head_topdown_is_the_papers():
    """A_top = Q_top, A_l = fuse(Q_l, up(A_{l+1})) with up resizing to Q_l's exact size."""
    torch.manual_seed(0)
    shapes = _shapes(["p2", "p3", "p4"])
    head = RSPHead(shapes, num_classes=5, conv_dims=32, fusion=["rsp", "sum"], kernel_size=3,
                   norm="GN", impl="reference").eval()
    feats = _features(shapes, 68, 92)
    feats["p4"] = feats["p4"][:, :, :5, :5]  # not a multiple: resizing must cope
    q = {n: head.q_convs[n](feats[n]) for n in ("p2", "p3", "p4")}

    def up(t, ref):
        return F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)

    a3 = q["p3"] + head.fusions["p4p3"].rse(q["p3"], up(q["p4"], q["p3"]))
    a2 = q["p2"] + up(a3, q["p2"])
    with torch.no_grad():
        torch.testing.assert_close(head.layers(feats), head.predictor(a2))
        logits, extra = head(feats)
    assert extra == {} and logits.shape == (1, 5, 68, 92)  # upsampled by the lowest stride
    assert isinstance(head.fusions["p3p2"], torch.nn.Module) and not list(head.fusions["p3p2"].parameters())


@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_fusion_in_place_matches_the_plain_call(kind):
    # Inference lets each fusion write into x's memory and upsample the coarse map a as it
    # needs (Fusion.fuse_): the same values (the RSP computes key and value before upsampling:
    # rounding apart; the others bit for bit); with autograd the inputs stay intact.
    torch.manual_seed(0)
    fusion = build_fusion(kind, 16, FusionSettings(kernel_size=3, impl="auto")).eval()
    x, a = torch.randn(2, 16, 18, 13), torch.randn(2, 16, 9, 7)
    z = F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = fusion(x, z)
        got = fusion.fuse_(x.clone(), a)
    if kind == "rsp":
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, expected)
    x0, a0 = x.clone(), a.clone()
    assert torch.equal(fusion.fuse_(x, a), expected) and torch.equal(x, x0) and torch.equal(a, a0)


def test_head_inference_in_place_spares_observed_fusions():
    # The head's inference path fuses in place, except for a fusion with forward hooks (the
    # head trace keeps its inputs): those must be what the fusion was given.
    torch.manual_seed(0)
    shapes = _shapes(["p2", "p3", "p4"])
    head = RSPHead(shapes, num_classes=5, conv_dims=32, fusion=["rsp", "sum"], kernel_size=3,
                   norm="GN").eval()
    feats = _features(shapes, 40, 56)
    seen = {}
    handles = [f.register_forward_hook(lambda m, args, out, k=k: seen.update(
        {k: [t.clone() for t in args] + [args, out]})) for k, f in head.fusions.items()]
    with torch.no_grad():
        logits = head.layers(feats)
    for h in handles:
        h.remove()
    for key, (x, z, args, out) in seen.items():
        assert torch.equal(args[0], x) and torch.equal(args[1], z)  # untouched after the call
        assert torch.equal(out, head.fusions[key](x, z))
    with torch.no_grad():  # unobserved: in place, the same values up to rounding
        torch.testing.assert_close(head.layers(feats), logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(head.predictor(head.aggregate(feats)[0]), logits,
                                   rtol=1e-5, atol=1e-5)


def test_head_inference_q_in_place_matches_the_modules(monkeypatch):
    # At inference each Q_l's norm and ReLU overwrite the conv's output (RSPHead._q): the
    # modules' values; a hooked conv is run as the module (its hooks see the call), and so is
    # a conv whose output is not a contiguous float map (channels_last), and the norm of a
    # bfloat16 output under autocast.
    torch.manual_seed(0)
    shapes = _shapes(["p2", "p3", "p4"])
    head = RSPHead(shapes, num_classes=5, conv_dims=32, fusion=["rsp", "sum"], kernel_size=3,
                   norm="GN").eval()
    feats = {k: v * 2 + 3 for k, v in _features(shapes, 40, 56).items()}
    in_place = []
    monkeypatch.setattr(rsp_head, "group_norm_relu_",
                        lambda y, norm: in_place.append(y.shape) or group_norm_relu_(y, norm))
    with torch.no_grad():
        for level, conv in head.q_convs.items():
            torch.testing.assert_close(head._q(level, feats), conv(feats[level]))
        assert len(in_place) == 3
        last = feats["p4"].to(memory_format=torch.channels_last)
        torch.testing.assert_close(head._q("p4", {"p4": last}), head.q_convs["p4"](last))
        assert len(in_place) == 3
        calls = []
        handle = head.q_convs["p3"].register_forward_hook(lambda *args: calls.append(args))
        head.layers(feats)
        handle.remove()
    assert len(calls) == 1 and len(in_place) == 5  # p2 and p4 in place, p3 as the module
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):  # conv and norm in bfloat16
        for level, conv in head.q_convs.items():
            expected = conv(feats[level])
            got = head._q(level, feats)
            assert got.dtype == expected.dtype == torch.bfloat16
            torch.testing.assert_close(got, expected)
    assert len(in_place) == 5


@pytest.mark.parametrize("norm", ["GN", "BN", ""])
def test_head_inference_q_reads_its_input_in_bands(monkeypatch, norm):
    # At inference each Q_l's conv reads its input a band of rows at a time (conv2d_rows),
    # whatever the norm; the norm and activation follow as Detectron2's Conv2d applies them.
    torch.manual_seed(0)
    shapes = _shapes(["p2", "p3"])
    head = RSPHead(shapes, num_classes=5, conv_dims=32, fusion=["rsp"], kernel_size=3,
                   norm=norm).eval()
    for conv in head.q_convs.values():
        if conv.norm is not None:  # not the identity that a fresh norm is
            torch.nn.init.uniform_(conv.norm.weight, 0.5, 1.5)
            torch.nn.init.uniform_(conv.norm.bias, -0.5, 0.5)
    feats = {k: v * 2 + 3 for k, v in _features(shapes, 48, 32).items()}  # p2: 12 rows
    banded = []
    monkeypatch.setattr(rsp_head, "BAND_ROWS", 2)
    monkeypatch.setattr(rsp_head, "conv2d_rows", lambda x, conv, rows: banded.append(
        (x.shape[-2], rows)) or conv2d_rows(x, conv, rows))
    with torch.no_grad():
        for level, conv in head.q_convs.items():
            torch.testing.assert_close(head._q(level, feats), conv(feats[level]))
    assert banded == [(12, 2), (6, 2)]  # p2 runs in 6 bands, p3 (at most four) whole


def test_head_loss_contract():
    torch.manual_seed(0)
    shapes = _shapes(["p2", "p3"])
    kw = dict(num_classes=4, conv_dims=8, fusion=["rsp"], kernel_size=3, ignore_value=255)
    head = RSPHead(shapes, loss_weight=1.0, **kw)
    feats = _features(shapes, 32, 40)
    targets = torch.randint(0, 4, (1, 32, 40))
    targets[:, :8] = 255
    _, losses = head.train()(feats, targets)
    logits = F.interpolate(head.layers(feats), scale_factor=4, mode="bilinear", align_corners=False)
    expected = F.cross_entropy(logits, targets, ignore_index=255)
    torch.testing.assert_close(losses["loss_sem_seg"], expected)
    half = RSPHead(shapes, loss_weight=0.5, **kw)
    half.load_state_dict(head.state_dict())
    torch.testing.assert_close(half(feats, targets)[1]["loss_sem_seg"], 0.5 * expected)

    boot = RSPHead(shapes, loss_type="bootstrapped", loss_top_k=0.25, **kw)
    boot.load_state_dict(head.state_dict())
    per_pixel = F.cross_entropy(logits, targets, ignore_index=255, reduction="none")[targets != 255]
    k = round(0.25 * per_pixel.numel())
    torch.testing.assert_close(boot(feats, targets)[1]["loss_sem_seg"], per_pixel.topk(k).values.mean())
    assert boot(feats, targets)[1]["loss_sem_seg"] > expected


def test_p2p7_backbone_shapes_and_divisibility():
    cfg = small_cfg("configs/cityscapes/rsp4_R50.yaml")
    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    assert {n: s.stride for n, s in shapes.items()} == {f"p{l}": 2 ** l for l in range(2, 8)}
    assert backbone.size_divisibility == 128
    plain = build_backbone(small_cfg("configs/cityscapes/rsp2_R50.yaml"))
    assert plain.size_divisibility == 32  # Detectron2's FPN: why P2-P7 needs its own
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 256, 384))  # 224 x 320 padded to 128
    for l in range(2, 8):
        assert feats[f"p{l}"].shape == (1, cfg.MODEL.FPN.OUT_CHANNELS, 256 >> l, 384 >> l)
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 224, 320) * 255}])[0]["sem_seg"]
    assert out.shape == (19, 224, 320)


@pytest.mark.parametrize("key,value,match", [
    ("MODEL.SEM_SEG_HEAD.RSP.FUSION", ["rsp", "sum"],
     r"MODEL.SEM_SEG_HEAD.RSP.FUSION \(fusion\)=\['rsp', 'sum'\] is invalid: expected 3 entries"),
    ("MODEL.SEM_SEG_HEAD.RSP.FUSION", ["rsp", "concat", "sum"],
     rf"FUSION \(fusion\)=.*expected entries from {re.escape(str(sorted(FUSIONS)))}, got 'concat'"),
    ("MODEL.SEM_SEG_HEAD.IN_FEATURES", ["p2", "p3", "p4", "p5", "p6", "p7"],
     r"IN_FEATURES=.* names \['p7'\], which the backbone .* build_resnet_fpn_p2p7_backbone"),
    ("MODEL.SEM_SEG_HEAD.RSP.KERNEL_SIZE", 4, r"KERNEL_SIZE \(kernel_size\)=4 is invalid: expected a positive odd"),
    ("MODEL.SEM_SEG_HEAD.RSP.DILATION", 0, r"DILATION \(dilation\)=0 is invalid: expected a pos"),
    ("MODEL.SEM_SEG_HEAD.RSP.REDUCTION", 3, r"REDUCTION \(reduction\)=3 is invalid: expected a divisor of .*CONVS_DIM=128"),
    ("MODEL.SEM_SEG_HEAD.RSP.NUM_HEADS", 3, r"NUM_HEADS \(num_heads\)=3 is invalid"),
    ("MODEL.SEM_SEG_HEAD.RSP.LOSS_TYPE", "focal", r"LOSS_TYPE \(loss_type\)='focal' is invalid"),
])
def test_bad_config_fails_at_build_time(key, value, match):
    cfg = small_cfg("configs/cityscapes/rsp2_R50.yaml", **{key: value})
    shapes = build_backbone(cfg).output_shape()
    with pytest.raises(ValueError, match=match):
        build_sem_seg_head(cfg, shapes)


def test_bad_window_of_a_context_head_names_its_key():
    # The fusions check what they use (ContextFusion: the window), the head names the key.
    shapes = _shapes(["p2", "p3"])
    with pytest.raises(ValueError, match=r"^RSPHead: MODEL.SEM_SEG_HEAD.RSP.KERNEL_SIZE "
                                         r"\(kernel_size\)=2 is invalid"):
        RSPHead(shapes, num_classes=3, conv_dims=8, fusion=["context"], kernel_size=2)
    RSPHead(shapes, num_classes=3, conv_dims=8, fusion=["sum"], kernel_size=2)  # unused there
