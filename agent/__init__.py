"""spot-agent: the entrypoint that supervises a job, watches for interruptions and checkpoints it."""

from checkpoint._version import __version__

__all__ = ["__version__"]
