"""Errors the trainer raises for the user to act on (no TensorFlow import, so the CLI can catch
them cheaply)."""


class TrainingDivergedError(RuntimeError):
    """A loss term became NaN or infinite; the message names the step and the batch."""
