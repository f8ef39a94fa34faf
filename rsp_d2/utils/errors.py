"""The one exception type for user mistakes, and how the command-line tools report one."""
import sys
from typing import NoReturn

__all__ = ["InputError", "TrainingDivergedError", "exit_with_error"]


class InputError(ValueError):
    """Bad user input (a path, a config key, a checkpoint, an image, a pixel): the command-line
    tools print it as one ``error: ...`` line and exit with status 2, without a traceback."""


class TrainingDivergedError(InputError):
    """A loss or prediction became NaN/Inf: the config cannot train (learning rate, norm,
    weights); the message names the iteration, the loss terms and the likely causes."""


def exit_with_error(error) -> NoReturn:
    """End a command-line tool on a user mistake: one ``error: ...`` line on stderr and exit
    status 2, as argparse ends on a bad argument; no traceback."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(2)
