"""GroupNorm and ReLU written into their input, for inference.

The RSP head's Q_l = ReLU(GN(conv3x3(P_l))) (Fig. 2) makes, with the modules, the conv's output
and then the norm's: two maps of the level at once. At inference the norm can overwrite the
conv's output instead (on the CPU this also measured faster than ``F.group_norm``).

Pure PyTorch: nothing here imports detectron2.
"""
import torch
from torch import nn

__all__ = ["group_norm_relu_"]


@torch.no_grad()
def group_norm_relu_(y: torch.Tensor, norm: nn.GroupNorm) -> torch.Tensor:
    """``relu(norm(y))`` written into y, (N, C, H, W) contiguous float32/float64, without
    autograd.

    The group's mean is subtracted first, then its variance is the mean square of the centred
    values, summed over rows of W pixels and then over the rows, so that the float32 sums of
    a large map stay as accurate as ``F.group_norm``'s.
    """
    n, c, h, w = y.shape
    g = norm.num_groups
    rows = y.view(n, g, -1, w)  # (N, G, C/G * H, W)
    rows.sub_(rows.mean(dim=(2, 3), keepdim=True))
    var = torch.linalg.vector_norm(rows, dim=3).square_().mean(dim=2).div_(w)  # (N, G)
    scale = (var + norm.eps).rsqrt_().repeat_interleave(c // g, dim=1)  # (N, C)
    if norm.affine:
        scale = scale * norm.weight
        torch.addcmul(norm.bias.view(1, c, 1, 1), y, scale.view(n, c, 1, 1), out=y)
    else:
        y.mul_(scale.view(n, c, 1, 1))
    return y.relu_()
