"""The checkpoint dir on this machine, as both directions see it.

:mod:`.walk` is the one walk of the dir, shared by every reader of it (sync, freeze,
restore's checks and clean-up), so all agree on what in it is the job's; :mod:`.scan`
lists what a checkpoint would hold and hashes what changed (the stat cache of
:mod:`.statcache`, rows in the walk's order read by a cursor, says what did not);
:mod:`.localindex` keeps, across a warm restart of the same boot, the proof that a file on
disk is the one a manifest names. Save and restore both stand on these.
"""
