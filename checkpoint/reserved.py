"""Names the agent reserves inside a checkpoint dir. Standard library only, Python 3.9:
the job API (:mod:`checkpoint.api`) imports it from the job's own interpreter."""

#: The agent's own files inside a checkpoint dir; never synced, never restored over.
RESERVED_DIR = ".spot-agent"
#: Suffix of the checkpoint API's temporary files: a file being written is not synced.
TEMP_SUFFIX = ".spot-tmp"
#: The label of the job's last save (``checkpoint.saving(label=...)``), beside the save-point
#: lock: written under the lock, read with the freeze (a group's "same save point").
SAVE_LABEL_NAME = "save-label"
