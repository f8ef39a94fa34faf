"""A traceable image -> semantic segmentation module over a Detectron2 model with an RSP head.

Detectron2's meta-architectures take a list of dicts and return a list of dicts, which neither
ONNX nor TorchScript tracing can follow. :class:`SemanticSegmentationAdapter` keeps what
``SemanticSegmentor.forward`` computes at inference (normalize, pad, backbone, head, crop) with
one tensor in and one tensor out, as ``detectron2.export.TracingAdapter`` does for the models
it supports.
"""
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SemanticSegmentationAdapter", "HeadAdapter"]


class SemanticSegmentationAdapter(nn.Module):
    """``adapter(image) -> logits or labels``, the semantic output of `model`.

    Input contract:
        image: (3, H, W) or (1, 3, H, W) float32, pixel values 0-255 in the model's
        ``INPUT.FORMAT`` channel order (BGR for the configs here), already resized to the
        network input size (Detectron2's predictor resizes the shorter side to
        ``INPUT.MIN_SIZE_TEST``). Normalization (``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``) and the
        zero padding to ``backbone.size_divisibility`` (128 for the P2-P7 backbones of RSP-4,
        32 for P2-P5) happen inside, as in ``SemanticSegmentor``; the output is cropped back.
        An input within one such tile (37 x 53) is padded to two tiles wide (128 x 256), so
        that no level is a single pixel (see ``FPNP2P7``).
        A traced graph follows the input's H x W (the pad amounts and the relation's indices
        and borders are computed from it).

    Output:
        (1, K, H, W) float32 logits (``SemanticSegmentor``'s "sem_seg" before softmax), or with
        ``labels=True`` (1, H, W) int64 class ids.

    Works for every model with ``backbone``, ``sem_seg_head``, ``pixel_mean`` and ``pixel_std``
    (``SemanticSegmentor``; for ``PanopticFPN`` it gives the semantic branch).
    """

    def __init__(self, model: nn.Module, labels: bool = False):
        super().__init__()
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone().view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone().view(1, -1, 1, 1), False)
        self.size_divisibility = max(1, int(self.backbone.size_divisibility))
        self.labels = labels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise ValueError(f"SemanticSegmentationAdapter: image must be (3, H, W) or "
                             f"(1, 3, H, W), got {tuple(image.shape)}")
        h, w = image.shape[2], image.shape[3]  # traced values while tracing: dynamic
        d = self.size_divisibility
        padded_h, padded_w = h + -h % d, w + -w % d
        # One tile: the coarsest level would be a single pixel, which GroupNorm with one channel
        # per group cannot normalize; two tiles wide, as FPNP2P7 pads at inference. Arithmetic,
        # not a branch, so that a traced graph decides it for every input size.
        padded_w = padded_w + ((padded_h <= d) & (padded_w <= d)) * d
        x = (image - self.pixel_mean) / self.pixel_std
        # Padding after normalization with 0, like ImageList.from_tensors in SemanticSegmentor.
        x = F.pad(x, (0, padded_w - w, 0, padded_h - h))
        logits, _ = self.sem_seg_head(self.backbone(x))
        logits = logits[:, :, :h, :w]
        return logits.argmax(dim=1) if self.labels else logits


class HeadAdapter(nn.Module):
    """``adapter(*features) -> (N, K, H, W)`` logits of `head` for its input levels in
    ``head.in_features`` order: the head alone, for exporting and timing it."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head
        self.in_features = list(head.in_features)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        logits, _ = self.head(dict(zip(self.in_features, features)))
        return logits
