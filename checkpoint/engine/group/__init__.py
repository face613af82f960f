"""A group: N agents, one per node, sharing one job id, that commit one save point or none.

Each rank commits its own checkpoints, called *parts*, with the commit protocol of any job
but under its own rank's folders (:class:`RankStore`; the keys are
:mod:`checkpoint.engine.format.layout`'s): its own sequence numbers and its own attempt
fence, so ranks never fence each other. Chunks and pages are the job's, shared by every
rank (same name, same bytes: ranks never disagree).

How the ranks agree on "the same save point": the job labels each save (the training
step, say: ``checkpoint.saving(label=step)``). The label is read with the save under the
save-point lock and kept in the part's manifest (``progress["save_label"]``,
:func:`label_of`). After each commit a rank looks for a part labelled the same in every
other rank; when all are there it writes the group record naming each rank's sequence,
create-only under the next group sequence (:meth:`Group.complete`). Of any two ranks
committing label L, the one whose look comes later sees both parts, so a record is written
once all parts exist (a rank killed between its commit and its look is covered by the
others' looks, unless it was the last; the next save writes a newer record). Two writers
of the same record race on one key: the loser reads the winner's.

A record is refused when two ranks' parts hold one path with different contents (a file
here, a directory there, two different files: :class:`PathConflict`): the restore of the
union would not be well defined. Identical copies are allowed (a rank that restored the
union carries the others' files unchanged).

Restore reads the newest group record and restores its parts only: the union of every
rank's part (:func:`merge_parts`, as on a shared filesystem), or the rank's own
(:meth:`Group.restore_view`). A part that is not in a record is never restored. ``gc``
sees every rank's parts (:func:`collected`), since they share the chunks.

- :mod:`.ranks`: one rank's parts (:class:`RankStore`);
- :mod:`.parts`: a part's label, and the union of parts;
- :mod:`.records`: the group records: written once every rank has a part, read to restore;
- :mod:`.views`: a group job as ``gc`` and the ``checkpoints`` commands see it.
"""

from .parts import PathConflict, label_of, merge_parts
from .ranks import RankStore
from .records import Group, GroupRecord
from .views import AllParts, GroupCheckpointsView, collected, group_size, is_group_job

__all__ = [
    "AllParts",
    "Group",
    "GroupCheckpointsView",
    "GroupRecord",
    "PathConflict",
    "RankStore",
    "collected",
    "group_size",
    "is_group_job",
    "label_of",
    "merge_parts",
]
