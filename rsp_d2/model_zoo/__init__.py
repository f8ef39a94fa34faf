"""The configs shipped with rsp_d2, found wherever the package is: a checkout's ``configs/`` or,
installed from a wheel, the copy inside the package (as Detectron2's ``model_zoo``).

    from rsp_d2 import model_zoo
    cfg = rsp_d2.load_config(model_zoo.get_config_file("cityscapes/rsp4_R50.yaml"))
"""
import os
from typing import List

__all__ = ["get_config_file", "config_root", "resolve_config_path"]

_PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_CHECKOUT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")


def config_root() -> str:
    """The folder the shipped configs are in: the package's copy (a wheel install, or the link
    ``setup.py`` makes in a checkout), else the checkout's ``configs/``."""
    for root in (_PACKAGED, _CHECKOUT):
        if os.path.isdir(root):
            return root
    raise FileNotFoundError(f"rsp_d2 ships its configs in {_PACKAGED}, which is missing: "
                            "reinstall rsp_d2")


def get_config_file(config_path: str) -> str:
    """The absolute path of a shipped config, e.g. ``"cityscapes/rsp4_R50.yaml"`` (the path
    under the repository's ``configs/``; a leading ``configs/`` is accepted too).

    Raises:
        InputError: no such config is shipped (the message lists the folder's configs).
    """
    from ..utils.errors import InputError

    relative = config_path[len("configs/"):] if config_path.startswith("configs/") else config_path
    path = os.path.join(config_root(), relative)
    if not os.path.isfile(path):
        raise InputError(f"rsp_d2 ships no config {config_path!r} (expected a path under "
                         f"configs/, e.g. {_examples()[:3]})")
    return path


def resolve_config_path(path: str) -> str:
    """`path` when it is a file; else, for a repository-relative ``configs/...`` path, the
    shipped config (so that the README's commands work from an installed package, anywhere)."""
    if os.path.isfile(path) or not path.startswith("configs/"):
        return path
    candidate = os.path.join(config_root(), path[len("configs/"):])
    return candidate if os.path.isfile(candidate) else path


def _examples() -> List[str]:
    root = config_root()
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root)
                  for f in files if f.endswith(".yaml"))
