"""Checkpoints for jobs that run on interruptible capacity (job author API below)."""

from ._version import __version__

__all__ = ["__version__"]
