"""rsp_d2: the RSP head (Bai et al., RA-L 2021) for Detectron2.

``import rsp_d2`` registers ``RSPHead`` in SEM_SEG_HEADS_REGISTRY and
``build_resnet_fpn_p2p7_backbone`` in BACKBONE_REGISTRY; ``add_rsp_config`` adds their keys.
``rsp_d2.layers`` (the relation and the fusions) needs only torch: without Detectron2
installed, ``import rsp_d2.layers`` works and only the Detectron2 parts are missing.
"""
import importlib.util

__version__ = "0.1.0"

if importlib.util.find_spec("detectron2") is not None:
    from ._import_warnings import known_import_warnings_silenced

    # Errors inside an installed Detectron2 propagate: only its absence is tolerated.
    with known_import_warnings_silenced():  # fvcore's import-time deprecation warnings
        from .config import add_rsp_config, load_config
        from . import modeling  # noqa: F401  (registers the head and the backbone)
else:
    def __getattr__(name):
        if name in ("add_rsp_config", "load_config"):
            raise ImportError(f"rsp_d2.{name} needs Detectron2, which is not installed; only "
                              "rsp_d2.layers works without it (see docs/INSTALL.md)")
        raise AttributeError(f"module 'rsp_d2' has no attribute {name!r}")
