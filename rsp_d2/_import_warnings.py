"""Warnings that third-party packages print while rsp_d2 imports them, silenced narrowly.

Only these messages, only during rsp_d2's own import (``warnings.catch_warnings`` restores the
filters afterwards), so every tool's stderr starts with its own output (an ``error: ...`` line)
rather than deprecation noise the user cannot act on; the same warnings raised later, by the
user's own calls, still show.
"""
import contextlib
import warnings

__all__ = ["KNOWN_IMPORT_WARNINGS", "known_import_warnings_silenced"]

# (category, regex matching the start of the message)
KNOWN_IMPORT_WARNINGS = (
    # fvcore.nn (imported by detectron2.layers) applies torch.jit.script to functions at import
    # time, and current torch (2.14 on the latest stack, not 2.3) warns that it is deprecated.
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
)


@contextlib.contextmanager
def known_import_warnings_silenced():
    with warnings.catch_warnings():
        for category, message in KNOWN_IMPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
