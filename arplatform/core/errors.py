"""The kinds of user error: every command turns them into one line and exit 2. `Interrupted`
(a stopped run whose state is saved) exits 130. Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class DataError(ValueError):
    """A codes, labels, image or codebook file is unusable."""


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not match what the caller expects."""


class TrainingError(RuntimeError):
    """The loss or its gradient stopped being finite; the last good checkpoint is kept."""


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or out of range."""


class RunStateError(RuntimeError):
    """A run to resume does not exist or never started; a run name is taken."""


class GenerationError(RuntimeError):
    """Generation stalled or lost batches; what was written is kept, a rerun continues."""


class StorageError(OSError):
    """A URI cannot be reached: unknown scheme, missing bucket, no credentials, no answer."""


class Interrupted(Exception):
    """A run stopped by the user (Ctrl-C, SIGTERM, `ray job stop`); `resume=true` continues it."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, RunStateError, TrainingError, GenerationError, StorageError)

__all__ = ["ConfigError", "DataError", "CheckpointError", "RunStateError", "TrainingError", "GenerationError",
           "StorageError", "USER_ERRORS", "Interrupted"]
