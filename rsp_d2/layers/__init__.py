"""Pure-PyTorch operations of the RSP head (no detectron2 import)."""
from .rse import (
    RSEImpl,
    available_rse_impls,
    check_rse_inputs,
    get_rse_impl,
    register_rse_impl,
    relative_position_map,
    rse_attention,
    rse_impl_names,
    rse_relation_weights,
    unregister_rse_impl,
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
# Importing these registers the fast implementations of rse_attention (impl="auto" order:
# rse_impl_names()).
from . import rse_chunked, rse_cpp, rse_export, rse_flex, rse_triton  # noqa: E402,F401
from .rse import is_exporting  # noqa: E402
from .rse_export import rse_attention_export  # noqa: E402
