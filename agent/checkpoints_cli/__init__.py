"""``spot-agent checkpoints ...``: inspect, restore and clean up what a store holds.

``list``, ``show``, ``restore``, ``gc`` and ``timeline`` work on one job; ``jobs`` lists
the jobs in a store; ``delete`` removes a finished job entirely. A job id the store does not
know is an error that names the nearest ones it does (a typo must not read as "no
checkpoints").

:mod:`.command` parses the verbs and dispatches them, each verb group in a module of its
own: :mod:`.views` (``jobs``, ``list``, ``show``, ``timeline``: read only), :mod:`.restore`
and :mod:`.cleanup` (``gc``, ``delete``).
"""
