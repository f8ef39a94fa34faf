"""Statistics of a multi-seed comparison: the paper reports "the median and standard deviation
of 5 random runs" (Table I caption); a paired per-seed difference says whether a head beats
another under the same seeds."""
import math
from typing import Dict, Mapping, Sequence

import numpy as np

__all__ = ["summarize", "paired_difference"]


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median, mean, sample std (ddof=1; NaN for one value), min, max and n of `values`."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("summarize: no values")
    return {
        "n": int(v.size),
        "median": float(np.median(v)),
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else math.nan,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def _t_quantile(p: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, dof))


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float],
                      confidence: float = 0.95) -> Dict[str, float]:
    """The per-seed difference ``values[s] - reference[s]`` over the seeds both have.

    Returns: n (common seeds), mean and median difference, std (ddof=1), a Student-t confidence
    interval of the mean difference (``ci_low``, ``ci_high``; NaN below 2 seeds), and the sign
    count ``wins`` / ``losses`` / ``ties`` (seeds where the difference is > 0, < 0, == 0).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence}: expected 0 < confidence < 1")
    seeds = sorted(set(values) & set(reference))
    d = np.array([values[s] - reference[s] for s in seeds], dtype=np.float64)
    out = {"n": len(seeds), "seeds": seeds, "mean": math.nan, "median": math.nan,
           "std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "confidence": confidence,
           "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}
    if d.size == 0:
        return out
    out.update(mean=float(d.mean()), median=float(np.median(d)))
    if d.size > 1:
        std = float(d.std(ddof=1))
        half = _t_quantile(0.5 + confidence / 2, d.size - 1) * std / math.sqrt(d.size)
        out.update(std=std, ci_low=float(d.mean() - half), ci_high=float(d.mean() + half))
    return out
