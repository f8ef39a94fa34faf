"""Pure-PyTorch operations of the RSP head (no detectron2 import).

The relation: ``rse_attention`` (rse.py) checks its arguments once (rse_checks.py) and runs an
implementation of the registry (rse_registry.py), filled in ``impl="auto"`` order by
rse_backends.py from the ``rse_<name>.py`` modules. The fusions: fusion.py, one module each.
"""
from .rse import rse_attention, run_rse
from .rse_checks import RSEWindow, check_rse_inputs
from .rse_common import is_exporting
from .rse_reference import relative_position_map, rse_relation_weights
from .rse_registry import (
    RSEImpl,
    available_rse_impls,
    get_rse_impl,
    register_rse_impl,
    rse_impl_names,
    rse_impls,
    unregister_rse_impl,
)
from .rse_checks import InvalidArgument
from .fusion import (
    FUSIONS,
    ContextFusion,
    Fusion,
    FusionSettings,
    RelationalSemanticsExtractor,
    RelationalSemanticsPropagator,
    SelfRelationFusion,
    SumFusion,
    build_fusion,
    fusion_class,
    fusion_has_relation,
    window_average,
)
# The implementation modules, importable as attributes of the package as before (rse.py has
# registered them already).
from . import rse_chunked, rse_cpp, rse_export, rse_flex, rse_triton  # noqa: E402,F401
from .rse_export import rse_attention_export  # noqa: E402
