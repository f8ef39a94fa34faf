"""Feature maps as colours: the first principal components in RGB (Fig. 4)."""
from typing import Tuple

import numpy as np
import torch

__all__ = ["pca_rgb", "normalize01"]


def normalize01(values: np.ndarray, low_q: float = 0.01, high_q: float = 0.99) -> np.ndarray:
    """Map the [low_q, high_q] quantile range of `values` (any shape) onto [0, 1], clipped, so
    that a few extreme pixels do not wash out the rest."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.full(values.shape, 0.5)
    lo, hi = np.quantile(finite, [low_q, high_q])
    if hi - lo < 1e-12:
        return np.full(values.shape, 0.5)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def pca_rgb(features: torch.Tensor, num_components: int = 3) -> Tuple[np.ndarray, np.ndarray]:
    """Project every pixel's C-dim feature onto the map's first principal components.

    Args:
        features: (C, H, W).

    Returns:
        rgb: (H, W, num_components) float in [0, 1], component i in channel i, each stretched
            over its 1-99 % quantiles; components that do not exist (C < num_components) are 0.5.
        explained: (num_components,) fraction of the total variance of each component.

    The sign of each component is fixed (largest loading positive), so equal inputs give equal
    colours.
    """
    c, h, w = features.shape
    x = features.detach().reshape(c, -1).t().double().cpu()
    x = x - x.mean(dim=0, keepdim=True)
    # Eigenvectors of the C x C covariance: much cheaper than an SVD of the (H*W, C) data.
    var, vecs = torch.linalg.eigh(x.t() @ x)
    var, vecs = var.flip(0).clamp(min=0), vecs.flip(1)  # descending
    k = min(num_components, c)
    comps = vecs[:, :k].t()  # (k, C)
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    proj = (x @ comps.t()).numpy().reshape(h, w, k)
    rgb = np.full((h, w, num_components), 0.5)
    explained = np.zeros(num_components)
    total = float(var.sum())
    for i in range(k):
        rgb[..., i] = normalize01(proj[..., i])
        explained[i] = float(var[i]) / total if total > 0 else 0.0
    return rgb, explained
