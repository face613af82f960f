"""The engine the agent is built on (boto3, Python 3.11+), behind the job API's fence.

A job never imports this package: it imports :mod:`checkpoint` (standard library only,
Python 3.9+), whose modules never import anything here. The rooms, bottom to top:

- :mod:`~checkpoint.engine.store`: where bytes live (a local directory, S3);
- :mod:`~checkpoint.engine.format`: what the bytes mean (the manifest, one job's keys and
  the commit protocol);
- :mod:`~checkpoint.engine.localdir`: the checkpoint dir on this machine (the walk, the
  hash, the stat cache, the local index of a warm restart);
- :mod:`~checkpoint.engine.save` and :mod:`~checkpoint.engine.restore`: the two directions,
  which never import each other;
- :mod:`~checkpoint.engine.checkpointer`: one dir and one job's checkpoints kept in step,
  the only module that knows both directions;
- :mod:`~checkpoint.engine.group`: a multi-node group's records over each rank's parts;
- :mod:`~checkpoint.engine.gc`, :mod:`~checkpoint.engine.lease`,
  :mod:`~checkpoint.engine.budget`, :mod:`~checkpoint.engine.progress`: pruning, a live
  attempt's lease and an operator's sweep, the bound on bytes in flight, progress reports.
"""
