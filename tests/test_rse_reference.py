"""The reference relation operation and the fusion modules against their definitions."""
import itertools

import pytest
import torch

from support.rse_loops import rse_loops
from rsp_d2.layers import (
    FUSIONS,
    ContextFusion,
    FusionSettings,
    InvalidArgument,
    RelationalSemanticsExtractor,
    RelationalSemanticsPropagator,
    SelfRelationFusion,
    SumFusion,
    build_fusion,
    fusion_has_relation,
    relative_position_map,
    rse_attention,
    rse_relation_weights,
    window_average,
)


def _inputs(n=2, m=8, c=12, h=9, w=11, k=3, pos=True, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, key = (torch.randn(n, m, h, w, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    p = torch.randn(k * k, m, generator=g, dtype=dtype) if pos else None
    return q, key, v, p


@pytest.mark.parametrize(
    "kernel_size,dilation,num_heads,pos,hw",
    [(3, 1, 1, False, (9, 11)), (3, 2, 2, True, (7, 13)), (5, 3, 4, True, (9, 11)),
     (7, 1, 1, True, (5, 6)), (7, 2, 2, False, (11, 8)), (1, 1, 1, True, (4, 5))],
)
def test_reference_matches_loops(kernel_size, dilation, num_heads, pos, hw):
    # (7, 1) on 5 x 6 and (7, 2) on 11 x 8: windows larger than the map, borders everywhere.
    q, k, v, p = _inputs(h=hw[0], w=hw[1], k=kernel_size, pos=pos)
    out = rse_attention(q, k, v, p, kernel_size, dilation, num_heads, impl="reference")
    expected = rse_loops(q, k, v, p, kernel_size, dilation, num_heads)
    assert out.shape == v.shape and out.dtype == v.dtype
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_borders_are_masked_not_zero_padded():
    # A constant value map must come out unchanged everywhere, corners included: zero-padded
    # keys would leak weight to the (zero) padded values and shrink the border outputs.
    q, k, _, p = _inputs(n=1, h=6, w=7, k=5)
    v = torch.full((1, 12, 6, 7), 3.0)
    out = rse_attention(q, k, v, p, 5, 2, 1, impl="reference")
    torch.testing.assert_close(out, v)


def test_relation_weights_sum_to_one_inside_map():
    q, k, _, p = _inputs(n=1, h=5, w=6, k=3)
    w = rse_relation_weights(q, k, p, kernel_size=3, dilation=2, num_heads=2)
    assert w.shape == (1, 2, 9, 5, 6)
    torch.testing.assert_close(w.sum(2), torch.ones(1, 2, 5, 6))
    # Pixel (0, 0) with dilation 2: only offsets (0,0), (0,2), (2,0), (2,2) lie inside.
    inside = w[0, 0, :, 0, 0] > 0
    assert inside.tolist() == [False, False, False, False, True, True, False, True, True]


def test_pos_is_added_to_key_before_dot_product():
    # Eq. 3: a pos row shifts that offset's logit by q . pos[o] for every pixel.
    q, k, v, _ = _inputs(n=1, h=4, w=4, k=3, pos=False)
    q = q.abs() + 0.5
    p = torch.zeros(9, 8)
    p[4] = 100.0  # q > 0, so q . pos[4] is a huge bias towards the centre offset
    out = rse_attention(q, k, v, p, 3, impl="reference")
    torch.testing.assert_close(out, v, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(rse_attention(q, k, v, None, 3, impl="reference"), v, atol=1e-2)


def test_gradcheck_reference():
    q, k, v, p = _inputs(n=1, m=4, c=4, h=4, w=5, k=3, dtype=torch.float64)
    args = [t.requires_grad_() for t in (q, k, v, p)]
    assert torch.autograd.gradcheck(
        lambda *a: rse_attention(*a, kernel_size=3, dilation=2, num_heads=2, impl="reference"), args)


@pytest.mark.parametrize("bad,match", [
    (dict(kernel_size=4), "kernel_size=4 is invalid: expected a positive odd integer"),
    (dict(dilation=0), "dilation=0 is invalid: expected a positive integer"),
    (dict(num_heads=3), r"num_heads=3 is invalid: expected .* \(M=8, C=12\)"),
    (dict(impl="nope"), "unknown impl 'nope'"),
])
def test_argument_errors(bad, match):
    q, k, v, _ = _inputs(k=3, pos=False)
    kwargs = dict(kernel_size=3, dilation=1, num_heads=1, impl="reference")
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        rse_attention(q, k, v, None, **kwargs)


def test_shape_dtype_errors():
    q, k, v, p = _inputs(k=3)
    with pytest.raises(ValueError, match="query .* and key .* must have the same shape"):
        rse_attention(q, k[:, :4], v, None, 3)
    with pytest.raises(ValueError, match="value .* must be"):
        rse_attention(q, k, v[:, :, :5], None, 3)
    with pytest.raises(ValueError, match=r"pos must be \(kernel_size\*\*2=9, M=8\)"):
        rse_attention(q, k, v, p[:4], 3)
    with pytest.raises(ValueError, match="value is torch.float64"):
        rse_attention(q, k, v.double(), p, 3)
    with pytest.raises(ValueError, match="must be floating point"):
        rse_attention(q.long(), k, v, p, 3)


def test_relative_position_map():
    p = relative_position_map(5, 6)
    assert p.shape == (25, 6)
    assert p.min() == -1 and p.max() == 1
    offsets = list(itertools.product(range(-2, 3), repeat=2))  # row-major (dy, dx)
    for o, (dy, dx) in enumerate(offsets):
        assert p[o, :3].tolist() == [dy / 2] * 3 and p[o, 3:].tolist() == [dx / 2] * 3


@pytest.mark.parametrize("k,d", [(3, 1), (3, 2), (5, 3), (7, 1)])
def test_window_average_matches_loops(k, d):
    z = torch.randn(2, 3, 9, 10)
    r = k // 2
    ref = torch.zeros_like(z)
    for i, j in itertools.product(range(9), range(10)):
        cells = [z[:, :, i + a * d, j + b * d] for a in range(-r, r + 1) for b in range(-r, r + 1)
                 if 0 <= i + a * d < 9 and 0 <= j + b * d < 10]
        ref[:, :, i, j] = torch.stack(cells).mean(0)
    torch.testing.assert_close(window_average(z, k, d), ref)


def test_rse_module_uses_projections_and_pos():
    torch.manual_seed(0)
    rse = RelationalSemanticsExtractor(16, kernel_size=3, dilation=2, reduction=4, num_heads=2)
    assert rse.query.out_channels == rse.key.out_channels == 4 and rse.value.out_channels == 16
    x, z = torch.randn(2, 16, 6, 7), torch.randn(2, 16, 6, 7)
    q, k, v = rse.query(x), rse.key(z), rse.value(z)
    pos = rse.pos(relative_position_map(3, 16))
    expected = rse_loops(q, k, v, pos, 3, 2, 2)
    torch.testing.assert_close(rse(x, z).double(), expected, atol=1e-5, rtol=1e-5)
    no_pos = RelationalSemanticsExtractor(16, kernel_size=3, pos_embedding=False)
    assert no_pos.pos is None and not any("pos" in n for n, _ in no_pos.named_parameters())


def test_fusions():
    torch.manual_seed(0)
    x, z = torch.randn(1, 8, 5, 6), torch.randn(1, 8, 5, 6)
    x2 = torch.randn(1, 8, 5, 6)
    rsp = RelationalSemanticsPropagator(8, kernel_size=3)
    torch.testing.assert_close(rsp(x, z), x + rsp.rse(x, z))  # Eq. 4
    # RSP: the low-level pixel chooses the context; SELF: the context ignores x.
    assert not torch.allclose(rsp(x, z) - x, rsp(x2, z) - x2)
    self_fusion = SelfRelationFusion(8, kernel_size=3)
    torch.testing.assert_close(self_fusion(x, z) - x, self_fusion(x2, z) - x2)
    torch.testing.assert_close(self_fusion(x, z), x + self_fusion.rse(z, z))
    ctx = ContextFusion(8, kernel_size=3, dilation=2)
    torch.testing.assert_close(ctx(x, z), x + window_average(z, 3, 2))
    assert list(ctx.parameters()) == []
    torch.testing.assert_close(SumFusion(8)(x, z), x + z)
    with pytest.raises(ValueError, match="unknown fusion 'concat'"):
        build_fusion("concat", 8)


def test_fusions_describe_themselves():
    """What each fusion is, asked of its class: the head, the traces and the analyses read
    these instead of knowing the names."""
    paper = {"sum": False, "rsp": True, "self": True, "context": False}  # Table IV
    assert {n: (FUSIONS[n].kind, fusion_has_relation(n)) for n in paper} == {
        n: (n, relation) for n, relation in paper.items()}
    assert all(cls.kind == name for name, cls in FUSIONS.items())
    x, z = torch.randn(1, 8, 5, 6), torch.randn(1, 8, 5, 6)
    for cls, query_from in ((RelationalSemanticsPropagator, x), (SelfRelationFusion, z)):
        fusion = cls(8, kernel_size=3)
        q_src, k_src = fusion.relation_inputs(x, z)
        assert q_src is query_from and k_src is z
        torch.testing.assert_close(fusion.relation_weights(x, z),
                                   fusion.rse.relation_weights(q_src, z))
    with pytest.raises(TypeError, match="computes no relation"):
        SumFusion(8).relation_inputs(x, z)
    with pytest.raises(ValueError, match="unknown fusion 'concat'"):
        fusion_has_relation("concat")


def test_fusions_take_explicit_arguments():
    # Each fusion takes the head's settings it uses; nothing else is accepted and dropped.
    settings = FusionSettings(kernel_size=3, dilation=2, reduction=4, num_heads=2,
                              pos_embedding=False, impl="reference")
    built = {n: build_fusion(n, 16, settings) for n in FUSIONS}
    rse = built["rsp"].rse
    assert (rse.kernel_size, rse.dilation, rse.num_heads, rse.impl, rse.pos) == (3, 2, 2,
                                                                                 "reference", None)
    assert rse.query.out_channels == 4
    assert (built["context"].window.kernel_size, built["context"].window.dilation) == (3, 2)
    assert type(build_fusion("self", 16, kernel_size=3)).__name__ == "SelfRelationFusion"
    with pytest.raises(TypeError):
        SumFusion(8, kernel_size=3)
    with pytest.raises(TypeError):
        ContextFusion(8, reduction=2)
    with pytest.raises(TypeError):
        build_fusion("sum", 8, kernel_sise=3)  # a typo is an error, not a default


@pytest.mark.parametrize("cls,kwargs,arg", [
    (ContextFusion, dict(kernel_size=4), "kernel_size"),
    (ContextFusion, dict(dilation=0), "dilation"),
    (RelationalSemanticsPropagator, dict(kernel_size=0), "kernel_size"),
    (SelfRelationFusion, dict(reduction=3), "reduction"),
    (RelationalSemanticsExtractor, dict(num_heads=3), "num_heads"),
])
def test_fusion_arguments_checked_when_built(cls, kwargs, arg):
    with pytest.raises(InvalidArgument) as info:
        cls(8, **kwargs)
    assert info.value.arg == arg and info.value.value == kwargs[arg]
