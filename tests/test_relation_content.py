"""The content-vs-position measure on hand-made relation maps: one positional pattern scores 0
(masked borders included), maps that depend on the pixel score above it."""
import numpy as np
import pytest

from rsp_d2.visualization.relation_content import offset_validity, relation_content


def _positional(pattern, valid):
    w = np.where(valid, pattern.reshape(-1, 1, 1), 0.0)
    return w / w.sum(0, keepdims=True)


def test_offset_validity_counts_window_cells_inside_the_map():
    v = offset_validity(3, 1, 2, 3)  # 3 x 3 window on a 2 x 3 map
    assert v.shape == (9, 2, 3)
    assert v[:, 0, 0].sum() == 4 and v[:, 0, 1].sum() == 6 and v[4].all()  # centre always in
    assert offset_validity(3, 2, 2, 3)[:, 0, 1].sum() == 1  # dilation 2: only the centre


@pytest.mark.parametrize("k, d, h, w", [(7, 1, 12, 20), (7, 1, 2, 3), (3, 2, 5, 5)])
def test_one_pattern_everywhere_scores_zero_even_with_masked_borders(k, d, h, w):
    rng = np.random.default_rng(0)
    valid = offset_validity(k, d, h, w)
    weights = _positional(rng.random(k * k) ** 3, valid)
    s = relation_content(weights, valid)
    assert s["content_fraction"] == pytest.approx(0.0, abs=1e-9)
    assert s["kl"] == pytest.approx(0.0, abs=1e-9)
    assert s["pattern_explained"] == pytest.approx(1.0)
    assert s["pixels"] == h * w


def test_content_dependent_maps_score_above_a_positional_one():
    rng = np.random.default_rng(1)
    k, h, w = 5, 10, 10
    valid = offset_validity(k, 1, h, w)
    positional = _positional(rng.random(k * k), valid)
    # two kinds of pixel attending to different offsets: a content-dependent relation
    left = np.zeros(k * k)
    left[0] = 1.0
    right = np.zeros(k * k)
    right[-1] = 1.0
    kind = (np.arange(w) < w // 2)[None, :].repeat(h, 0)
    logits = np.where(kind[None], 5 * left[:, None, None], 5 * right[:, None, None])
    content = np.where(valid, np.exp(logits), 0.0)
    content /= content.sum(0, keepdims=True)
    s_pos = relation_content(positional, valid)
    s_content = relation_content(content, valid)
    assert s_content["content_fraction"] > 0.3 > s_pos["content_fraction"]
    assert s_content["kl"] > 0.1
    # mixing in content raises the score monotonically
    mixes = [relation_content((1 - a) * positional + a * content, valid)["content_fraction"]
             for a in (0.0, 0.3, 0.7, 1.0)]
    assert mixes == sorted(mixes) and mixes[0] < 1e-9


def test_heads_layout_and_default_validity():
    rng = np.random.default_rng(2)
    valid = offset_validity(3, 1, 4, 4)
    a = _positional(rng.random(9), valid)
    b = _positional(rng.random(9), valid)  # each head its own pattern: still positional
    s = relation_content(np.stack([a, b]))  # validity from weights > 0
    assert s["content_fraction"] == pytest.approx(0.0, abs=1e-9) and s["pixels"] == 32
    with pytest.raises(ValueError):
        relation_content(np.zeros(5))
