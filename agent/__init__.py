"""spot-agent: the entrypoint that supervises a job, watches for notices and checkpoints it."""

from checkpoint._version import __version__

__all__ = ["__version__"]
