"""The paper's fusion, RSP (Sec. III-B, Eq. 4), and its +SELF ablation (Table IV): both add to x
the relational semantics an RSE extracts from z; they differ only in what the query comes from.

Pure PyTorch: nothing here imports detectron2.
"""
import torch

from .fusion_base import Fusion, FusionSettings, upsample_to
from .rse_extractor import RelationalSemanticsExtractor

__all__ = ["RelationalSemanticsPropagator", "SelfRelationFusion"]


class RelationalSemanticsPropagator(Fusion):
    """RSP (Sec. III-B, Eq. 4): x-hat = x + RSE(x, z); the low-level pixel (query from x)
    chooses its context in the high-level region (key and value from z).

    Args:
        channels: C of x and z.
        kernel_size, dilation, reduction, num_heads, pos_embedding, impl: the RSE's
            (:class:`RelationalSemanticsExtractor`), checked there.
    """

    kind = "rsp"
    has_relation = True
    query_from, key_from = "x", "z"

    def __init__(self, channels: int, kernel_size: int = 7, dilation: int = 1,
                 reduction: int = 2, num_heads: int = 1, pos_embedding: bool = True,
                 impl: str = "auto"):
        super().__init__()
        self.rse = RelationalSemanticsExtractor(channels, kernel_size, dilation, reduction,
                                                num_heads, pos_embedding, impl)

    @classmethod
    def from_settings(cls, channels: int, settings: FusionSettings) -> Fusion:
        s = settings
        return cls(channels, s.kernel_size, s.dilation, s.reduction, s.num_heads,
                   s.pos_embedding, s.impl)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x + self.rse(*self.relation_inputs(x, z))

    def _fuse_in_place(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if (self.query_from, self.key_from) != ("x", "z"):  # add_to_ is the query-from-x form
            return super()._fuse_in_place(x, a)
        return self.rse.add_to_(x, a)

    def embeddings(self, x: torch.Tensor, z: torch.Tensor):
        """The RSE's query, key, value and pos for this fusion's inputs (Fig. 4)."""
        return self.rse.embeddings(*self.relation_inputs(x, z))

    def relation_weights(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(N, num_heads, k*k, H, W) relation weights for this fusion's inputs (Fig. 1b)."""
        return self.rse.relation_weights(*self.relation_inputs(x, z))


class SelfRelationFusion(RelationalSemanticsPropagator):
    """+SELF of Table IV: a local relation on z alone (query from z, as in Local Relation
    Networks), added to x: x + RSE(z, z). Same cost as RSP, but x does not choose the context."""

    kind = "self"
    query_from = "z"

    def _fuse_in_place(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        z = upsample_to(a, x)  # the query needs z itself
        return self.rse(z, z).add_(x)  # the RSE's output is new
