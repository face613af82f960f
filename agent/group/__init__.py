"""A multi-node group: N agents, one per node, sharing one job id (docs/groups.md).

- :mod:`.checkpoints`: a rank's checkpoints: restore from the newest group checkpoint,
  complete the group record after each commit, keep the parts records name;
- :mod:`.notices`: an interruption on any node reaches every node through the store;
- :class:`GroupRun`: what the run loop gets for a group, built from the settings.

The record and restore-plan logic (the engine's side) is :mod:`checkpoint.engine.group`.
"""

from .run import GroupRun

__all__ = ["GroupRun"]
