"""What a cross-scale fusion of the RSP head is and says about itself.

A fusion combines a low-level map x with the high-level map z upsampled to x's size, both
(N, C, H, W), into A = fuse(x, z) (Fig. 2); at inference the head hands it the high-level map
before upsampling (:meth:`Fusion.fuse_`). Each one is a :class:`Fusion` subclass that
declares its name, whether it computes a relation (Eq. 1-3) and, if so, what its query and key
come from; the head, the traces and the analyses read those instead of knowing the names.

Pure PyTorch: nothing here imports detectron2.
"""
from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .rse_common import is_exporting

__all__ = ["Fusion", "FusionSettings", "upsample_to", "runs_as_defined"]


def runs_as_defined(module: nn.Module) -> bool:
    """Whether `module` must run its plain forward rather than an inference form that
    overwrites its inputs: autograd is on, a graph is being traced or exported (which must
    record the paper's form), or it or one of its modules is observed by forward hooks (the
    head trace keeps what they see)."""
    return (torch.is_grad_enabled() or is_exporting()
            or any(m._forward_hooks or m._forward_pre_hooks for m in module.modules()))


def upsample_to(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """z = up(a): the high-level map a (N, C, h, w) resized bilinearly to x's (H, W), as the
    head aggregates (Fig. 2); (N, C, H, W)."""
    return F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class FusionSettings:
    """The head's settings for its fusions (MODEL.SEM_SEG_HEAD.RSP.*); each fusion takes the
    ones it uses (:meth:`Fusion.from_settings`) and checks them when built.

    Attributes:
        kernel_size, dilation: the k x k region (odd k) each pixel relates to, Eq. 1.
        reduction: d, the channel reduction of f_q and f_k.
        num_heads: channel groups with their own softmax.
        pos_embedding: add f_p(p) to the key (Eq. 3).
        impl: implementation of the relation (:func:`rsp_d2.layers.rse_attention`).
    """

    kernel_size: int = 7
    dilation: int = 1
    reduction: int = 2
    num_heads: int = 1
    pos_embedding: bool = True
    impl: str = "auto"


class Fusion(nn.Module):
    """Base of the fusions: ``forward(x, z) -> (N, C, H, W)`` with x, z (N, C, H, W).

    Class attributes a subclass sets:
        kind: its name in MODEL.SEM_SEG_HEAD.RSP.FUSION and in the paper's labels ("rsp").
        has_relation: it computes relation weights, a query and a key (Eq. 1-3); then it has
            an RSE module ``self.rse`` and :meth:`relation_inputs` says what it relates.
        query_from, key_from: "x" or "z", what f_q and f_k are applied to (relation only).
    """

    kind: str = ""
    has_relation: bool = False
    query_from: str = "x"
    key_from: str = "z"

    @classmethod
    def from_settings(cls, channels: int, settings: FusionSettings) -> "Fusion":
        """The fusion for `channels`-channel maps, built from the settings it uses."""
        raise NotImplementedError(f"{cls.__name__} must define from_settings")

    def fuse_(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``forward(x, upsample_to(a, x))`` for a caller that gives x up (the head, at each
        level; a is the aggregated map of the level above at its own size). Without autograd
        the fusion may write the result into x's memory and decide how and whether z is made
        (:meth:`_fuse_in_place`): inference then holds fewer maps of each level. The same
        values as the plain call, up to float rounding where the fusion says so. Where
        :func:`runs_as_defined` (autograd, a trace or export, hooks) the plain call runs,
        which leaves x intact and records the paper's form of the fusion."""
        if runs_as_defined(self):
            return self(x, upsample_to(a, x))
        return self._fuse_in_place(x, a)

    def _fuse_in_place(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``forward(x, upsample_to(a, x))`` that may overwrite x (no autograd); by default
        it does not."""
        return self(x, upsample_to(a, x))

    def relation_inputs(self, x: torch.Tensor,
                        z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(what the query is computed from, what the key is computed from): x or z each."""
        if not self.has_relation:
            raise TypeError(f"the {self.kind!r} fusion computes no relation")
        maps = {"x": x, "z": z}
        return maps[self.query_from], maps[self.key_from]
