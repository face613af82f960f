"""What the stored bytes mean: the manifest and one job's keys.

:mod:`.manifest` is the format of one checkpoint (pure data, one validation shared by sync
and restore). :mod:`.jobstore` owns every key of one job in a store (blobs, packs,
manifests, attempts) and the commit protocol: an attempt claims a fencing token, blobs and
packs go up content-addressed, and the manifest is written last with a create-only write,
so a checkpoint is committed whole or not at all.
"""
