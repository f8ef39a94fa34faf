"""One run per OUTPUT_DIR: a second training or evaluation into a folder in use is refused.

Two runs into one folder interleave ``metrics.json`` and ``log.txt`` and leave checkpoints and
``results.json`` of whichever finished last. The lock is ``flock`` on ``OUTPUT_DIR/.run.lock``:
the kernel releases it when its process ends, however it ends, so a killed run never leaves the
folder locked (the file stays; its content, the holder's pid, is only a hint for the message).
"""
import contextlib
import errno
import fcntl
import os
from typing import Iterator

from ..utils.errors import InputError

__all__ = ["LOCK_NAME", "output_dir_lock"]

LOCK_NAME = ".run.lock"


@contextlib.contextmanager
def output_dir_lock(output_dir: str) -> Iterator[None]:
    """Hold OUTPUT_DIR's run lock for the duration of the block (the folder is created).

    Raises:
        InputError: another process holds it.
    """
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise InputError(f"OUTPUT_DIR {output_dir} is in use by another run (pid {holder}): "
                             "wait for it to finish, or choose another OUTPUT_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
