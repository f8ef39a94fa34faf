"""What a resumed run needs beyond Detectron2's checkpoint (model, optimizer, scheduler,
iteration) to continue exactly where the killed run was: the RNG states, a ``metrics.json``
without the records the resumed run will write again, and no files of killed writes."""
import json
import logging
import os
import random
from typing import Dict

import numpy as np
import torch

from ..utils.errors import InputError

__all__ = ["get_rng_state", "require_checkpoint", "set_rng_state", "truncate_metrics"]


def get_rng_state() -> Dict:
    """The states of Python's, NumPy's, torch's (and CUDA's) global RNGs, as tensors and plain
    data (checkpoints stay loadable with ``torch.load(weights_only=True)``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def require_checkpoint(output_dir: str) -> str:
    """The checkpoint ``--resume`` continues from: the file ``OUTPUT_DIR/last_checkpoint``
    names, which must be directly in `output_dir`. The pointer is a plain file anyone can edit
    or ship: a name such as ``/tmp/x.pth`` or ``../x.pth`` would load weights from elsewhere.

    Raises:
        InputError: there is no pointer (a mistyped OUTPUT_DIR would otherwise silently train
            from scratch), or it names no file of `output_dir`.
    """
    pointer = os.path.join(output_dir, "last_checkpoint")
    if not os.path.isfile(pointer):
        raise InputError(
            f"--resume: no checkpoint to resume in OUTPUT_DIR {output_dir} (it has no "
            "last_checkpoint file): check OUTPUT_DIR, or drop --resume to start a new run")
    with open(pointer) as f:
        name = f.read().strip()
    if not name or os.path.basename(name) != name or name in (".", ".."):
        raise InputError(f"--resume: {pointer} names {name!r}, which is not a file name in "
                         f"{output_dir} (it may only name a checkpoint of that folder): remove "
                         "last_checkpoint to start a new run")
    path = os.path.join(output_dir, name)
    if not os.path.isfile(path):
        raise InputError(f"--resume: {pointer} names {name!r}, which is not a file in "
                         f"{output_dir}: remove last_checkpoint to start a new run")
    return path


def truncate_metrics(path: str, last_iteration: int) -> int:
    """Cut `path` (Detectron2's ``metrics.json``, one JSON record a line, in iteration order)
    before its first record past `last_iteration`; returns the number of records dropped.

    The file is truncated in place, so that Detectron2's JSONWriter, which holds it open for
    appending, continues right after the kept records.
    """
    if not os.path.isfile(path):
        return 0
    offset, dropped = None, 0
    with open(path, "rb") as f:
        position = 0
        for line in f:
            if offset is None:
                try:
                    beyond = json.loads(line).get("iteration", -1) > last_iteration
                except ValueError:  # a line cut by the kill
                    beyond = True
                if beyond:
                    offset = position
            if offset is not None and line.strip():
                dropped += 1
            position += len(line)
    if offset is not None:
        os.truncate(path, offset)
        logging.getLogger(__name__).info(
            f"Dropped {dropped} records past iteration {last_iteration} from {path}")
    return dropped
