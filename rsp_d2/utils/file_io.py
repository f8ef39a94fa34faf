"""Crash-safe file writes: a file appears complete or not at all.

Every writer of the package goes through :class:`AtomicWriter`: the bytes go to a hidden
sibling, are fsynced, and the sibling is renamed over the target (``os.replace`` is atomic on
POSIX within one filesystem). The sibling's name does not end in the target's extension, so
loaders that list a folder by extension (Detectron2's, fvcore's ``*.pth`` listing) never see a
half-written file.
"""
import io
import json
import math
import os
import shutil

__all__ = [
    "AtomicWriter",
    "remove_stale_temporaries",
    "save_image_atomic",
    "to_strict_json",
    "write_bytes_atomic",
    "write_json_atomic",
]

_TMP_INFIX = ".tmp-"


def _temporary_sibling(path: str) -> str:
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}{_TMP_INFIX}{os.getpid()}")


class AtomicWriter:
    """``with AtomicWriter(path, "wb") as f: ...`` writes a hidden sibling of `path`, then
    fsyncs it and renames it over `path`; on an exception the sibling is removed and `path`
    is left as it was."""

    def __init__(self, path, mode: str = "wb"):
        if mode not in ("w", "wb"):
            raise ValueError(f"AtomicWriter: mode {mode!r} is not 'w' or 'wb'")
        self.path = os.fspath(path)
        self._tmp = _temporary_sibling(self.path)
        self._file = open(self._tmp, mode)

    def __enter__(self):
        return self._file

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._tmp, self.path)
        finally:
            self._file.close()
            if os.path.exists(self._tmp):
                os.remove(self._tmp)
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory, prefix: str = ".") -> list:
    """Delete what killed writes left in `directory`: hidden ``<prefix>...tmp-<pid>`` (and
    ``...old-<pid>``) files or folders whose writing process no longer exists (a live one may
    be a concurrent writer).

    Returns:
        the removed paths.
    """
    removed = []
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        if not name.startswith(prefix):
            continue
        for infix in (_TMP_INFIX, ".old-"):
            pid = name.rpartition(infix)[2] if infix in name else ""
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                path = os.path.join(directory, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
                removed.append(path)
                break
    return removed


def write_bytes_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :class:`AtomicWriter`."""
    with AtomicWriter(path, "wb") as f:
        f.write(data)


def save_image_atomic(path, image, **save_kwargs) -> None:
    """Encode a PIL image (format from the extension of ``path``) and write it atomically."""
    image_format = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(
        os.path.splitext(os.fspath(path))[1].lower())
    if image_format is None:
        raise ValueError(f"{path}: unsupported image extension (expected .png, .jpg or .jpeg)")
    buf = io.BytesIO()
    image.save(buf, format=image_format, **save_kwargs)
    write_bytes_atomic(path, buf.getvalue())


def to_strict_json(obj):
    """`obj` with every NaN/inf float replaced by None, so that it serializes as valid JSON
    (Python's json writes bare ``NaN``, which other parsers reject)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: to_strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict_json(v) for v in obj]
    return obj


def write_json_atomic(path, obj, *, indent=None, sort_keys: bool = True) -> None:
    """Serialize ``obj`` as strict JSON (NaN -> null) and write it atomically; with
    `sort_keys`, equal inputs give equal bytes."""
    text = json.dumps(to_strict_json(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    write_bytes_atomic(path, text.encode("utf-8"))
