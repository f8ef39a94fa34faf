"""Small helpers shared across the package: crash-safe file writes and the user-error type."""
from .errors import InputError, TrainingDivergedError
from .file_io import (
    AtomicWriter,
    remove_stale_temporaries,
    save_image_atomic,
    write_bytes_atomic,
    write_json_atomic,
)
