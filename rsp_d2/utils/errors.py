"""The one exception type for user mistakes."""

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad user input (a path, a config key, a checkpoint, an image, a pixel): the command-line
    tools print it as one ``error: ...`` line and exit with status 2, without a traceback."""
