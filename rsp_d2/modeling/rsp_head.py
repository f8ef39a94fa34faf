import logging
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..layers import FUSIONS, FusionSettings, InvalidArgument, build_fusion
from ..layers.fusion_base import runs_as_defined
from ..layers.group_norm import group_norm_relu_
from ..layers.row_bands import BAND_ROWS, conv2d_rows
from .losses import bootstrapped_cross_entropy

__all__ = ["RSPHead"]

_LOSS_TYPES = ("cross_entropy", "bootstrapped")
# The config key behind each argument the fusions check (rsp_d2/layers/rse_checks.py): their
# InvalidArgument is reported under the key the user wrote.
_FUSION_KEYS = {
    "kernel_size": "MODEL.SEM_SEG_HEAD.RSP.KERNEL_SIZE (kernel_size)",
    "dilation": "MODEL.SEM_SEG_HEAD.RSP.DILATION (dilation)",
    "reduction": "MODEL.SEM_SEG_HEAD.RSP.REDUCTION (reduction)",
    "num_heads": "MODEL.SEM_SEG_HEAD.RSP.NUM_HEADS (num_heads)",
    "channels": "MODEL.SEM_SEG_HEAD.CONVS_DIM",
}


def _relu_(x: torch.Tensor) -> torch.Tensor:
    # In place: the norm's output is not used again (its backward needs only its input), so
    # the 3x3 conv of the finest level holds one map fewer at its peak.
    return F.relu(x, inplace=True)


def _check(ok: bool, key: str, value, expected: str):
    if not ok:
        raise ValueError(f"RSPHead: {key}={value!r} is invalid: expected {expected}")


@SEM_SEG_HEADS_REGISTRY.register()
class RSPHead(nn.Module):
    """The RSP head (Sec. III-B, Fig. 2): a drop-in for Detectron2's ``SemSegFPNHead``.

    Each input level l gets Q_l = ReLU(norm(conv3x3(P_l))). The levels are then aggregated
    top-down over adjacent pairs, A_top = Q_top and A_l = fuse_l(Q_l, up(A_{l+1})), where
    ``up`` resizes bilinearly to Q_l's exact size and ``fuse_l`` is the RSP of Eq. 4, the
    baseline's sum, or an ablation (Table IV). A 1x1 conv predicts the classes on A_lowest,
    upsampled bilinearly by the lowest level's stride.

    RSP-2 (p2-p5): fusion ["rsp", "rsp", "sum"]; RSP-4 (p2-p7): ["rsp"] * 4 + ["sum"];
    the baseline uses "sum" everywhere.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        fusion: List[str],
        kernel_size: int = 7,
        dilation: int = 1,
        reduction: int = 2,
        num_heads: int = 1,
        pos_embedding: bool = True,
        impl: str = "auto",
        norm: Optional[Union[str, Callable]] = None,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        loss_type: str = "cross_entropy",
        loss_top_k: float = 1.0,
        data_recipe: Optional[str] = None,
    ):
        """
        Args:
            input_shape: the levels the head reads (channels and stride each), any order.
            num_classes: number of classes to predict.
            conv_dims: channels C of Q_l and of the fusions.
            fusion: a name of :data:`rsp_d2.layers.FUSIONS` (as shipped "sum" | "rsp" |
                "self" | "context") per adjacent pair of levels, top-down (the first entry
                fuses the two coarsest levels).
            kernel_size, dilation, reduction, num_heads, pos_embedding, impl: the fusions'
                settings (:class:`rsp_d2.layers.FusionSettings`), checked by the fusions that
                use them when they are built; a bad one is reported under its config key.
            norm: normalization after each 3x3 conv ("GN", "BN", "" ...).
            loss_weight, ignore_value: as in ``SemSegFPNHead``.
            loss_type: "cross_entropy" or "bootstrapped" (the `loss_top_k` hardest pixels).
            data_recipe: the dataset mapper the config trains with when it is not Detectron2's
                (``INPUT.DATASET_MAPPER_NAME``, e.g. "rsp_semantic"): the first training step
                warns unless the trainer confirmed that its loader applies it
                (:mod:`rsp_d2.engine.recipe`); a stock Detectron2 loader would drop it silently.
        """
        super().__init__()
        levels = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        _check(len(levels) >= 1, "MODEL.SEM_SEG_HEAD.IN_FEATURES (input_shape)",
               list(input_shape), "at least one feature level")
        self.in_features = [k for k, _ in levels]
        fusion = list(fusion)
        _check(len(fusion) == len(levels) - 1, "MODEL.SEM_SEG_HEAD.RSP.FUSION (fusion)", fusion,
               f"{len(levels) - 1} entries, one per adjacent pair of IN_FEATURES "
               f"{self.in_features}, top-down")
        for name in fusion:
            _check(name in FUSIONS, "MODEL.SEM_SEG_HEAD.RSP.FUSION (fusion)", fusion,
                   f"entries from {sorted(FUSIONS)}, got {name!r}")
        _check(loss_type in _LOSS_TYPES, "MODEL.SEM_SEG_HEAD.RSP.LOSS_TYPE (loss_type)",
               loss_type, f"one of {_LOSS_TYPES}")
        _check(0.0 < loss_top_k <= 1.0, "MODEL.SEM_SEG_HEAD.RSP.LOSS_TOP_K (loss_top_k)",
               loss_top_k, "a fraction in (0, 1]")

        self.common_stride = levels[0][1].stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.loss_type = loss_type
        self.loss_top_k = loss_top_k
        self.fusion_names = fusion
        self._data_recipe = data_recipe
        self._data_recipe_checked = data_recipe is None

        # Q_l: the 3x3 conv (+ norm, ReLU) that brings each input level to conv_dims channels.
        self.q_convs = nn.ModuleDict()
        for name, shape in levels:
            conv = Conv2d(shape.channels, conv_dims, kernel_size=3, padding=1, bias=not norm,
                          norm=get_norm(norm, conv_dims), activation=_relu_)
            weight_init.c2_msra_fill(conv)
            self.q_convs[name] = conv
        settings = FusionSettings(kernel_size=kernel_size, dilation=dilation,
                                  reduction=reduction, num_heads=num_heads,
                                  pos_embedding=pos_embedding, impl=impl)
        self.fusions = nn.ModuleDict()
        # Registered finest pair first (state-dict order of earlier checkpoints).
        for (key, _, _), name in reversed(list(zip(self.fusion_pairs(), fusion))):
            try:
                self.fusions[key] = build_fusion(name, conv_dims, settings)
            except InvalidArgument as e:
                raise ValueError(f"RSPHead: {e.message(_FUSION_KEYS)}") from e
        self.predictor = Conv2d(conv_dims, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        wanted = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
        missing = [f for f in wanted if f not in input_shape]
        if missing:
            raise ValueError(
                f"RSPHead: MODEL.SEM_SEG_HEAD.IN_FEATURES={wanted} names {missing}, which the "
                f"backbone ({cfg.MODEL.BACKBONE.NAME}) does not produce; it produces "
                f"{sorted(input_shape)}. For p6/p7 use MODEL.BACKBONE.NAME: "
                f"build_resnet_fpn_p2p7_backbone.")
        rsp = cfg.MODEL.SEM_SEG_HEAD.RSP
        return {
            "input_shape": {k: input_shape[k] for k in wanted},
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "conv_dims": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "fusion": list(rsp.FUSION),
            "kernel_size": rsp.KERNEL_SIZE,
            "dilation": rsp.DILATION,
            "reduction": rsp.REDUCTION,
            "num_heads": rsp.NUM_HEADS,
            "pos_embedding": rsp.POS_EMBEDDING,
            "impl": rsp.IMPL,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_type": rsp.LOSS_TYPE,
            "loss_top_k": rsp.LOSS_TOP_K if rsp.LOSS_TYPE == "bootstrapped" else 1.0,
            "data_recipe": (None if cfg.INPUT.DATASET_MAPPER_NAME == "default"
                            else cfg.INPUT.DATASET_MAPPER_NAME),
        }

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        """
        Args:
            features: level name -> (N, C_in, H_l, W_l), e.g. the FPN outputs p2..p7.
            targets: (N, H, W) long labels at the padded input size, for training.

        Returns:
            training: (None, {"loss_sem_seg": loss}); inference: ((N, K, H, W) logits at
            the lowest level's size times its stride, i.e. the padded input size, {}).
        """
        x = self.layers(features)
        if self.training:
            if not self._data_recipe_checked:
                self._warn_recipe_not_applied()
            return None, self.losses(x, targets)
        x = F.interpolate(x, scale_factor=self.common_stride, mode="bilinear", align_corners=False)
        return x, {}

    def confirm_data_recipe(self) -> None:
        """Called by the trainer whose loader applies ``data_recipe``: no warning."""
        self._data_recipe_checked = True

    def _warn_recipe_not_applied(self) -> None:
        self._data_recipe_checked = True  # once
        logging.getLogger(__name__).warning(
            f"INPUT.DATASET_MAPPER_NAME is {self._data_recipe!r}, but this run's training loader "
            "is not rsp_d2's: it trains without that mapper (the paper's data pipeline, Sec. "
            "IV-A, with Detectron2's DatasetMapper instead). Use `class Trainer(RSPDataMixin, "
            "DefaultTrainer)` or `build_recipe_train_loader(cfg, model)` from rsp_d2.engine "
            "(README, 'Use the head in your own Detectron2 project').")

    def aggregate(self, features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """The aggregated maps A_l, finest first: [(N, C, H_l, W_l) for each level]."""
        maps = []
        for a in self._top_down(features):
            maps.insert(0, a)
        return maps

    def _top_down(self, features: Dict[str, torch.Tensor]) -> Iterator[torch.Tensor]:
        """Yields A_top, ..., A_lowest. The finest level's Q comes first, while nothing else
        is held (its 3x3 conv reads the widest input map); the others are computed when their
        fusion needs them, and without autograd a fusion that nothing observes writes into the
        memory of its inputs (:meth:`~rsp_d2.layers.Fusion.fuse_`), so that inference does not
        hold all Q_l and all A_l at once (the RSP also never makes up(A_{l+1}) at Q_l's size)."""
        finest, coarsest = self.in_features[0], self.in_features[-1]
        q_finest = self._q(finest, features)
        a = q_finest if finest == coarsest else self._q(coarsest, features)
        yield a
        for key, _, fine in self.fusion_pairs():
            x = q_finest if fine == finest else self._q(fine, features)
            if fine == finest:
                del q_finest  # x is its only reference now: the fusion may write into it
            a = self.fusions[key].fuse_(x, a)  # upsamples a to x's size as it needs
            del x
            yield a

    def _q(self, level: str, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Q_l. At inference the conv reads its input a band of rows at a time
        (:func:`~rsp_d2.layers.row_bands.conv2d_rows`: the conv library's copy of the widest
        input map is never whole), and with GroupNorm the norm and ReLU overwrite the conv's
        output (:func:`~rsp_d2.layers.group_norm.group_norm_relu_`), so the level's map exists
        once, not twice. A module that is observed (hooks), traced or exported runs as the
        module it is; the norm runs as its module on an output in another dtype than its
        input's (mixed precision: on the CPU GroupNorm then computes in the output's bfloat16,
        which is faster than writing into it) or than float32/float64, or not contiguous."""
        conv, p = self.q_convs[level], features[level]
        if runs_as_defined(conv):
            return conv(p)
        y = conv2d_rows(p, conv, BAND_ROWS)
        norm, activation = conv.norm, conv.activation
        if (isinstance(norm, nn.GroupNorm) and activation is _relu_ and y.dtype == p.dtype
                and y.dtype in (torch.float32, torch.float64) and y.is_contiguous()):
            return group_norm_relu_(y, norm)
        if norm is not None:  # then the activation, as detectron2's Conv2d.forward
            y = norm(y)
        return activation(y) if activation is not None else y

    def fusion_pairs(self) -> List[Tuple[str, str, str]]:
        """[(name, coarse level, fine level)] of the fusions, top-down (coarsest pair first,
        the order of RSP.FUSION). Names follow the paper's "RSP-54" convention: "p5p4" fuses
        p4 with the aggregated p5."""
        levels = self.in_features
        return [(f"{levels[i + 1]}{levels[i]}", levels[i + 1], levels[i])
                for i in range(len(levels) - 2, -1, -1)]

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, K, H_lowest, W_lowest) logits before upsampling."""
        for a in self._top_down(features):
            pass
        return self.predictor(a)

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor):
        if targets is None:
            raise ValueError("RSPHead: training needs targets (N, H, W) of semantic labels")
        predictions = predictions.float()  # cross entropy in float32 under AMP
        predictions = F.interpolate(predictions, scale_factor=self.common_stride,
                                    mode="bilinear", align_corners=False)
        if self.loss_type == "bootstrapped":
            loss = bootstrapped_cross_entropy(predictions, targets, self.ignore_value, self.loss_top_k)
        else:
            loss = F.cross_entropy(predictions, targets, reduction="mean",
                                   ignore_index=self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}
