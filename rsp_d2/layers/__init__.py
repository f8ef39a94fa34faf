"""Pure-PyTorch operations of the RSP head (no detectron2 import)."""
from .rse import (
    available_rse_impls,
    check_rse_inputs,
    register_rse_impl,
    relative_position_map,
    rse_attention,
    rse_relation_weights,
)
from .fusion import (
    FUSIONS,
    ContextFusion,
    RelationalSemanticsExtractor,
    RelationalSemanticsPropagator,
    SelfRelationFusion,
    SumFusion,
    build_fusion,
    window_average,
)
# Importing these registers the fast implementations of rse_attention (impl="auto" order
# in rse._AUTO_ORDER).
from . import rse_chunked, rse_cpu, rse_flex, rse_triton  # noqa: E402,F401
