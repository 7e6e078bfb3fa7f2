"""Errors the platform raises for bad input: one line naming the file and the problem."""


class DataError(ValueError):
    """A codes, labels, image or codebook file is unusable."""


class CheckpointError(ValueError):
    """A checkpoint is unreadable or does not match what the caller expects."""


class TrainingError(RuntimeError):
    """Training cannot go on: the loss or its gradient stopped being finite."""
