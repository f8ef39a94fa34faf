"""Checkpoints that are complete or absent: a crash while saving never leaves a corrupt file."""
import os

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicDetectionCheckpointer", "AtomicWriter"]


class AtomicWriter:
    """``with AtomicWriter(path, "wb") as f: ...`` writes a hidden sibling of `path`, then
    fsyncs it and renames it over `path` (atomic on POSIX); on an exception it is removed.

    The sibling's name does not end in the target's extension, so fvcore's listing of
    ``*.pth`` checkpoints never sees a half-written one.
    """

    def __init__(self, path: str, mode: str = "wb"):
        if mode not in ("w", "wb"):
            raise ValueError(f"AtomicWriter: mode {mode!r} is not 'w' or 'wb'")
        self.path = path
        directory, base = os.path.split(os.path.abspath(path))
        self._tmp = os.path.join(directory, f".{base}.tmp-{os.getpid()}")
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


class _AtomicWritePathManager:
    """Delegates to an iopath PathManager, but opens local files for writing atomically."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def open(self, path, mode="r", **kwargs):
        if mode in ("w", "wb") and "://" not in str(path) and not kwargs:
            return AtomicWriter(path, mode)
        return self._path_manager.open(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self._path_manager, name)


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose checkpoint and ``last_checkpoint`` writes are atomic.

    fvcore's ``Checkpointer.save`` streams ``torch.save`` straight into the final file and
    then rewrites ``last_checkpoint`` in place: a run killed meanwhile leaves a truncated
    ``.pth`` or an empty ``last_checkpoint``, and ``--resume`` then fails. Both writes go
    through ``self.path_manager.open``, so routing that through :class:`AtomicWriter` fixes
    both without re-implementing ``save``.
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.path_manager = _AtomicWritePathManager(self.path_manager)
