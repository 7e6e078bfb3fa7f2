"""The kinds of user error, one type each. Every command turns them into one line and exit 2.

    ConfigError      a configuration key is unknown, mistyped or out of range
    DataError        a codes, labels, image or codebook file is unusable
    CheckpointError  a checkpoint is unreadable or does not match what the caller expects
    RunStateError    a run to resume does not exist or never started; a run name is taken
    TrainingError    the loss diverged (non-finite); the last good checkpoint is kept
    GenerationError  batch generation stalled or lost batches; rerunning continues it
    StorageError     a URI cannot be reached: unknown scheme, missing bucket, no credentials,
                     an endpoint that does not answer

`Interrupted` is not an error: a run stopped by the user (Ctrl-C, SIGTERM, `ray job stop`)
whose state is saved; the command exits 130 and `resume=true` continues it.

Anything else that escapes a command is a bug and keeps its traceback.
"""

from __future__ import annotations


class DataError(ValueError):
    """A codes, labels, image or codebook file is unusable."""


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not match what the caller expects."""


class TrainingError(RuntimeError):
    """Training cannot go on: the loss or its gradient stopped being finite."""


class ConfigError(ValueError):
    """A configuration key is unknown, mistyped or out of range."""


class RunStateError(RuntimeError):
    """The run state on disk does not allow what was asked (resume, a run name)."""


class GenerationError(RuntimeError):
    """Generation stopped (a stalled or failed Ray pipeline); what was written is kept."""


class StorageError(OSError):
    """A path or URI of the storage layer cannot be read or written (`storage.py`)."""


class Interrupted(Exception):
    """A run was stopped (a sweep whose trials Ray Tune interrupted); its state is kept."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, RunStateError, TrainingError, GenerationError, StorageError)

__all__ = ["ConfigError", "DataError", "CheckpointError", "RunStateError", "TrainingError", "GenerationError",
           "StorageError", "USER_ERRORS", "Interrupted"]
