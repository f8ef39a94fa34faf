import torch
import torch.nn.functional as F


def bootstrapped_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                               top_k: float) -> torch.Tensor:
    """Cross entropy averaged over the `top_k` fraction of hardest labelled pixels.

    Args:
        logits: (N, K, H, W); targets: (N, H, W) long, `ignore_index` where unlabelled.
        top_k: in (0, 1]; 1.0 is plain per-pixel cross entropy.

    Ignored pixels are excluded before ranking, so the kept fraction is of labelled pixels.
    """
    losses = F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="none")
    losses = losses[targets != ignore_index]
    if losses.numel() == 0:
        # Keeps the graph connected (DDP needs every parameter to receive a gradient).
        return logits.sum() * 0.0
    k = max(1, int(round(top_k * losses.numel())))
    if k < losses.numel():
        losses = losses.topk(k).values
    return losses.mean()
