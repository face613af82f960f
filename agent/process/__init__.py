"""The job's process: spawn it, give it the terminal, signal it, reap it, stop its tree.

Free of S3, logs and IMDS (tini's lesson): :mod:`.supervisor` takes a command and
callbacks; :mod:`.spawn` starts the job as tini does, :mod:`.tree` finds and ends its
process tree. :mod:`.signals` is the one table of signals (real-time ones included),
:mod:`.glibc_signals` the two glibc keeps for itself, :mod:`.early` the signals taken from
the entry point's first line until the run loop replays them.
"""
