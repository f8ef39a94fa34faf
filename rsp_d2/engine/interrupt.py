"""How a ``train_net.py`` run ends when it is stopped from outside: Ctrl-C, SIGTERM (a job
scheduler, ``kill``), or a full disk. Each ends with one line that says where the run was and
how to continue it, instead of a traceback (Ctrl-C) or silence (SIGTERM).

Nothing needs saving on the way out: every file is written atomically, so what is on disk is
the last complete checkpoint, which ``--resume`` continues exactly.
"""
import contextlib
import errno
import shlex
import signal
import threading
from typing import Callable, Iterator, Optional, Union

__all__ = ["Terminated", "disk_full", "disk_full_message", "exit_status", "interrupted_in", "interruption_message",
           "resume_command", "sigterm_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread was, like Ctrl-C's KeyboardInterrupt: ``finally``
    blocks (temporary files, data-loader workers) are unwound the same way."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (only from the main thread, the
    one place Python delivers signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupted_in(where: Union[str, Callable[[], str]]) -> Iterator[None]:
    """Label an interruption inside the block with `where` (e.g. "iteration 41")."""
    try:
        yield
    except KeyboardInterrupt as e:
        if not hasattr(e, "rsp_where"):
            e.rsp_where = where() if callable(where) else where
        raise


def exit_status(error: KeyboardInterrupt) -> int:
    """128 + the signal number, as a shell reports a process the signal ended."""
    return 128 + (signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT)


def resume_command(args) -> str:
    """The ``train_net.py`` command line that continues the run of `args` (its parsed
    arguments): the same options with ``--resume``, before the KEY VALUE overrides."""
    words = ["python", "train_net.py", "--config-file", args.config_file]
    if args.num_gpus != 1:
        words += ["--num-gpus", str(args.num_gpus)]
    if args.num_machines != 1:
        words += ["--num-machines", str(args.num_machines), "--machine-rank",
                  str(args.machine_rank), "--dist-url", args.dist_url]
    return shlex.join(words + ["--resume", *(args.opts or [])])


def interruption_message(error: KeyboardInterrupt, args) -> str:
    """``stopped by SIGINT (Ctrl-C) at iteration 41; ...`` and how to continue the run."""
    name = "SIGTERM" if isinstance(error, Terminated) else "SIGINT (Ctrl-C)"
    if getattr(args, "eval_only", False):
        return f"stopped by {name} during the evaluation; no result was written: run it again"
    where = getattr(error, "rsp_where", None) or "before training started"
    return f"stopped by {name} at {where}; no result was written. {how_to_continue(args)}"


def disk_full_message(what: str, args) -> str:
    """`what` (see :func:`disk_full`), where, and how to continue once there is space."""
    output_dir = _output_dir(args)
    where = f" (OUTPUT_DIR {output_dir})" if output_dir else ""
    return f"{what}{where}: free some space. {how_to_continue(args)}"


def how_to_continue(args) -> str:
    """The last checkpoint of the run and the command that continues from it, or that there is
    none. Every file is written atomically, so whatever is on disk is complete."""
    checkpoint = _last_checkpoint(args)
    if checkpoint is None:
        return "No checkpoint was written: start the run again"
    return f"The last checkpoint is {checkpoint}: continue with {resume_command(args)}"


def _output_dir(args) -> Optional[str]:
    from ..config import load_config

    try:
        return load_config(args.config_file, args.opts or []).OUTPUT_DIR
    except Exception:  # noqa: BLE001 - the config itself is what failed
        return None


def _last_checkpoint(args) -> Optional[str]:
    from .resume import require_checkpoint

    output_dir = _output_dir(args)
    try:
        return require_checkpoint(output_dir) if output_dir else None
    except Exception:  # noqa: BLE001 - no checkpoint: nothing to continue
        return None


def disk_full(error: BaseException) -> Optional[str]:
    """"no space left on device (PATH)" when `error` or an exception it was raised from or
    during is a full disk or quota, else None. torch.save reports one as a RuntimeError of its
    zip writer; the OSError naming the cause is further down the chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT) or \
                "No space left on device" in str(error):
            path = getattr(error, "filename", None)
            return "no space left on device" + (f" writing {path}" if path else "")
        error = error.__cause__ or error.__context__
    return None
