"""Expensive fixtures built once per test run, also when pytest-xdist runs it in several workers.

Each xdist worker has its own session, so a ``scope="session"`` fixture would be built once per
worker. :func:`run_once` builds it in the first worker that asks, under a file lock in the
directory all workers of the run share (the parent of each worker's base temp); the others wait
for it and read the result. Without xdist it is a plain build in the session's temp directory.
"""
import fcntl
import json
import os

from rsp_d2.utils.file_io import write_json_atomic

__all__ = ["run_once"]


def _shared_dir(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def run_once(tmp_path_factory, name, build):
    """``build(directory)`` once per test run: it fills the new empty ``directory`` and returns
    a JSON-serializable value, which every later call of the run returns (decoded) without
    building. A build that raises is retried by the next caller, in a new directory."""
    shared = _shared_dir(tmp_path_factory)
    result = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not result.exists():
            directory = tmp_path_factory.mktemp(name)
            write_json_atomic(result, build(directory), sort_keys=False)
    return json.loads(result.read_text())
