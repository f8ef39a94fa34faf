"""The one exception type for user mistakes, and the one way the command-line tools report one.

Every user error is an :class:`InputError` (the dataset errors subclass it as well as the
built-in type their callers expect); :func:`print_error` writes it, and :func:`exit_with_error`
ends a tool with it.
"""
import sys
from typing import NoReturn

__all__ = ["InputError", "TrainingDivergedError", "exit_with_error", "print_error"]


class InputError(ValueError):
    """Bad user input (a path, a config key, a checkpoint, an image, a pixel): the command-line
    tools print it as one ``error: ...`` line and exit with status 2, without a traceback."""


class TrainingDivergedError(InputError):
    """A loss or prediction became NaN/Inf: the config cannot train (learning rate, norm,
    weights); the message names the iteration, the loss terms and the likely causes."""


def print_error(error, file=None) -> None:
    """One ``error: ...`` line (on stderr unless `file`): a user mistake, or why a run stopped.

    A message raised in a data-loader worker arrives inside the worker's traceback text, whose
    last line is the message: only that line is printed.
    """
    text = str(error)
    if "Original Traceback" in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    print(f"error: {text}", file=file or sys.stderr, flush=True)


def exit_with_error(error) -> NoReturn:
    """End a command-line tool on a user mistake: :func:`print_error` and exit status 2, as
    argparse ends on a bad argument; no traceback."""
    print_error(error)
    raise SystemExit(2)
