"""The one exception type for user mistakes."""

__all__ = ["InputError", "TrainingDivergedError"]


class InputError(ValueError):
    """Bad user input (a path, a config key, a checkpoint, an image, a pixel): the command-line
    tools print it as one ``error: ...`` line and exit with status 2, without a traceback."""


class TrainingDivergedError(InputError):
    """A loss or prediction became NaN/Inf: the config cannot train (learning rate, norm,
    weights); the message names the iteration, the loss terms and the likely causes."""
