"""The operator's view of a job: what each attempt did and what interruptions cost.

- :mod:`.record` each attempt's record in the store, written by the agent as it runs
- :mod:`.model` the timeline built from those records (``checkpoints timeline --json``)
- :mod:`.render` the table at a terminal; :mod:`.svg` the picture
"""
