"""The comparison statistics on hand-made inputs with known answers."""
import math

import pytest

from rsp_d2.analysis.stats import paired_difference, summarize


def test_summarize_known_values():
    s = summarize([52.3, 54.5, 52.9])
    assert s["n"] == 3 and s["median"] == 52.9
    assert s["mean"] == pytest.approx(53.2333333)
    # sample std (ddof=1): deviations -0.9333, 1.2667, -0.3333
    assert s["std"] == pytest.approx(math.sqrt((0.8711111 + 1.6044444 + 0.1111111) / 2))
    assert (s["min"], s["max"]) == (52.3, 54.5)
    assert summarize([1.0, 2.0, 3.0, 10.0])["median"] == 2.5


def test_summarize_one_value_has_no_std_and_none_is_an_error():
    assert math.isnan(summarize([4.0])["std"])
    with pytest.raises(ValueError):
        summarize([])


def test_paired_difference_t_interval_and_signs():
    a = {0: 10.0, 1: 12.0, 2: 14.0, 3: 99.0}  # seed 3 has no partner: ignored
    b = {0: 9.0, 1: 9.0, 2: 9.0, 7: 0.0}
    d = paired_difference(a, b)
    # differences 1, 3, 5: mean 3, std 2, t(0.975, 2) = 4.302653
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d["mean"] == pytest.approx(3.0) and d["median"] == pytest.approx(3.0)
    assert d["std"] == pytest.approx(2.0)
    half = 4.302653 * 2.0 / math.sqrt(3)
    assert d["ci_low"] == pytest.approx(3.0 - half, abs=1e-5)
    assert d["ci_high"] == pytest.approx(3.0 + half, abs=1e-5)
    assert (d["wins"], d["losses"], d["ties"]) == (3, 0, 0)


def test_paired_difference_signs_and_degenerate_cases():
    d = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 2.0, 2: 2.0})
    assert (d["wins"], d["losses"], d["ties"]) == (1, 1, 1) and d["mean"] == pytest.approx(0.0)
    one = paired_difference({0: 5.0}, {0: 3.0})
    assert one["mean"] == 2.0 and math.isnan(one["ci_low"]) and math.isnan(one["std"])
    none = paired_difference({0: 5.0}, {1: 3.0})
    assert none["n"] == 0 and math.isnan(none["mean"])
    with pytest.raises(ValueError):
        paired_difference({0: 1.0}, {0: 1.0}, confidence=1.5)
