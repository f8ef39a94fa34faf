"""Checks of where a command-line tool is about to write, made before it does any work.

A tool that writes its output at the end (a benchmark of minutes, a training run, a conversion of
thousands of files) should refuse a path it cannot write before it starts, not fail with an
``OSError`` traceback afterwards or leave half of its outputs behind. These checks only look:
they create nothing, so a refused run leaves the file system as it was.

Write permission is judged by ``os.access``, which, unlike the mode bits, also knows about
read-only mounts and ACLs; for root it ignores the mode bits, as the kernel does.
"""
import os

from .errors import InputError

__all__ = ["check_output_dir", "check_output_file"]


def _nearest_existing(path: str) -> str:
    """`path` (absolute) or its closest ancestor that exists."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _check_folder_usable(folder: str, path, what: str, *, create: bool) -> None:
    """`folder` (absolute, the folder that will hold the output or be the output) exists and
    can be written, or, with `create`, can be made by ``os.makedirs``."""
    existing = _nearest_existing(folder)
    if existing != folder and not create:
        raise InputError(f"{what} {path}: folder {folder} does not exist; create it first or "
                         "choose another path")
    if not os.path.isdir(existing):
        raise InputError(f"{what} {path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path} cannot be written: no write permission on {existing}")


def check_output_dir(path, what: str, *, create: bool = True) -> None:
    """Refuse, as :class:`InputError`, a folder a tool cannot write into.

    Args:
        path: the folder the tool will write into.
        what: how the user named it, e.g. ``"--output"``: every message starts with it.
        create: the tool makes the folder (and its missing parents) when absent; when False
            the folder must exist.

    Raises:
        InputError: `path` is empty or a file, a file stands where a folder of it would be
            created, or the folder (or its nearest existing ancestor) is not writable.
    """
    if not path:
        raise InputError(f"{what} is empty: expected a folder")
    folder = os.path.abspath(os.fspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise InputError(f"{what} {path} is a file: expected a folder")
    _check_folder_usable(folder, path, what, create=create)


def check_output_file(path, what: str, *, create_parents: bool = False) -> None:
    """Refuse, as :class:`InputError`, a file path a tool cannot write.

    Only the folder matters for an existing file: the package writes through
    :mod:`rsp_d2.utils.file_io`, which replaces the file by a rename in that folder.

    Args:
        path: the file the tool will write (created or replaced).
        what: how the user named it, e.g. ``"--out"``: every message starts with it.
        create_parents: the tool makes the file's missing folders; when False its folder must
            exist.

    Raises:
        InputError: `path` is empty or an existing folder, its folder is missing (without
            `create_parents`) or cannot be created or written.
    """
    if not path:
        raise InputError(f"{what} is empty: expected a file")
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise InputError(f"{what} {path} is a folder: expected a file")
    _check_folder_usable(os.path.dirname(target), path, what, create=create_parents)
