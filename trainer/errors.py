"""Errors the trainer raises for the user to act on (no TensorFlow import, so the CLI can catch
them cheaply)."""

from schemas.errors import UserError


class TrainingDivergedError(UserError, RuntimeError):
    """A loss term became NaN or infinite; the message names the step and the batch."""


class TrainingPreempted(RuntimeError):
    """SIGTERM stopped training after a checkpoint; the same command resumes the run."""
