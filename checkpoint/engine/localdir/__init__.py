"""The checkpoint dir on this machine, as both directions see it.

:mod:`.scan` walks the dir and hashes what changed (the stat cache says what did not);
:mod:`.localindex` keeps, across a warm restart of the same boot, the proof that a file on
disk is the one a manifest names. Save and restore both stand on these.
"""
